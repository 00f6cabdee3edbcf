import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_it_renders(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content


def test_it_works(client, user):
    response = client.post("/login/", {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 302
    assert response.url == reverse("dashboard:keys")
    assert client.get(reverse("dashboard:keys")).status_code == 200


def test_it_rejects_wrong_password(client, user):
    response = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert "_auth_user_id" not in client.session


def test_it_redirects_to_next(client, user):
    usage_url = reverse("dashboard:usage")
    response = client.post("/login/", {"username": "alice", "password": "correct horse battery", "next": usage_url})
    assert response.status_code == 302
    assert response.url == usage_url


def test_logout_works(client, user):
    client.force_login(user)
    response = client.post("/logout/")
    assert response.status_code == 302
    assert response.url == reverse("login")
    assert "_auth_user_id" not in client.session


def test_logout_requires_post(client, user):
    client.force_login(user)
    assert client.get("/logout/").status_code == 405
    assert client.session["_auth_user_id"] == str(user.pk)


def test_dashboard_shows_logout_form(client, user):
    client.force_login(user)
    content = client.get(reverse("dashboard:keys")).content.decode()
    assert f'method="post" action="{reverse("logout")}"' in content
    assert "csrfmiddlewaretoken" in content

import secrets

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


# --- Throttling: 10 failures a minute per IP or per username --------------------------------------


def _ip() -> str:
    # Each test its own address: the counters live in the shared Redis cache for a minute.
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def _fail(client, username: str, ip: str, times: int) -> None:
    for _ in range(times):
        response = client.post("/login/", {"username": username, "password": "wrong"}, REMOTE_ADDR=ip)
        assert response.status_code == 200


@pytest.fixture
def throttled_user(django_user_model):
    name = f"user-{secrets.token_hex(4)}"
    return django_user_model.objects.create_user(name, f"{name}@example.com", "correct horse battery")


def test_it_throttles_an_ip_after_ten_failures(client, throttled_user):
    ip = _ip()
    for index in range(10):  # different usernames: the IP's count alone throttles
        _fail(client, f"nobody-{secrets.token_hex(4)}-{index}", ip, 1)

    response = client.post(
        "/login/", {"username": throttled_user.username, "password": "correct horse battery"}, REMOTE_ADDR=ip
    )

    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert f"Try again in {retry_after} second" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_throttles_a_username_from_any_ip(client, throttled_user):
    for _ in range(10):
        _fail(client, throttled_user.username, _ip(), 1)

    response = client.post(
        "/login/", {"username": throttled_user.username.upper(), "password": "correct horse battery"}, REMOTE_ADDR=_ip()
    )

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_it_allows_nine_failures(client, throttled_user):
    ip = _ip()
    _fail(client, throttled_user.username, ip, 9)

    response = client.post(
        "/login/", {"username": throttled_user.username, "password": "correct horse battery"}, REMOTE_ADDR=ip
    )

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(throttled_user.pk)


def test_successful_logins_are_not_counted(client, throttled_user):
    ip = _ip()
    for _ in range(12):
        response = client.post(
            "/login/", {"username": throttled_user.username, "password": "correct horse battery"}, REMOTE_ADDR=ip
        )
        assert response.status_code == 302
        client.post("/logout/")


def test_the_admin_login_is_throttled_too(client, throttled_user):
    ip = _ip()
    for _ in range(10):
        response = client.post("/admin/login/", {"username": throttled_user.username, "password": "x"}, REMOTE_ADDR=ip)
        assert response.status_code == 200

    response = client.post("/admin/login/", {"username": "someone", "password": "x"}, REMOTE_ADDR=ip)

    assert response.status_code == 429

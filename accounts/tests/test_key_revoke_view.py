import pytest
from django.urls import reverse

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_key(user, make_key):
    return make_key(user, name="ci runner")[0]


def _url(api_key: ApiKey) -> str:
    return reverse("dashboard:key-revoke", args=[api_key.pk])


def test_it_shows_confirmation(client, user, api_key):
    client.force_login(user)
    response = client.get(_url(api_key))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Revoke “ci runner”?" in content
    assert "refused immediately" in content
    assert f"{api_key.display_prefix}…" in content
    assert 'method="post"' in content
    assert "csrfmiddlewaretoken" in content
    assert reverse("dashboard:keys") in content  # the cancel link
    api_key.refresh_from_db()
    assert api_key.revoked_at is None


def test_it_works(client, user, api_key):
    client.force_login(user)
    response = client.post(_url(api_key))
    assert response.status_code == 302
    assert response.url == reverse("dashboard:keys")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert not api_key.is_active

    content = client.get(response.url).content.decode()
    assert "Revoked “ci runner”" in content  # the flash message
    assert "state-revoked" in content


def test_it_rejects_outsider(client, outsider, api_key):
    client.force_login(outsider)
    assert client.get(_url(api_key)).status_code == 404
    assert client.post(_url(api_key)).status_code == 404
    api_key.refresh_from_db()
    assert api_key.revoked_at is None


def test_it_requires_login(client, api_key):
    url = _url(api_key)
    response = client.post(url)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"
    api_key.refresh_from_db()
    assert api_key.revoked_at is None


def test_it_handles_already_revoked(client, user, api_key):
    client.force_login(user)
    client.post(_url(api_key))
    response = client.get(_url(api_key))
    assert response.status_code == 200
    assert b"already revoked" in response.content

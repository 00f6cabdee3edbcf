import re

import pytest
from django.test import Client
from django.urls import reverse

from deployments.fleet import join_token_create, node_register
from deployments.models import JoinToken
from nodeprotocol import VERSION as PROTOCOL

pytestmark = pytest.mark.django_db

URL = reverse("fleet:tokens")
RAW_TOKEN = re.compile(r"gpcj_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


def test_it_requires_login(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={URL}"


def test_it_rejects_outsider(client, user):
    client.force_login(user)
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"name": "sneaky"}).status_code == 403
    assert not JoinToken.objects.exists()


def test_it_works(client, staff):
    token, plaintext = join_token_create(name="rack 3", created_by=staff)
    cli_token, _ = join_token_create(name="from the shell")  # as manage.py createjointoken does
    node_register(token=plaintext, name="box", host="", engine="simulated", slots=8, gpus=[], protocol=PROTOCOL)
    node_register(token=plaintext, name="box", host="", engine="simulated", slots=8, gpus=[], protocol=PROTOCOL)
    client.force_login(staff)
    response = client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "rack 3" in content and "from the shell" in content
    assert f"gpcj_{token.prefix}…" in content
    assert "oscar" in content
    assert "command line" in content  # created by manage.py createjointoken
    assert '<td class="num">2</td>' in content  # nodes joined with "rack 3"
    assert '<td class="num">0</td>' in content
    assert reverse("fleet:token-revoke", args=[token.pk]) in content
    assert list(response.context["tokens"]) == [cli_token, token]  # newest first
    assert plaintext not in content
    assert not RAW_TOKEN.search(content)


def test_it_creates_token_and_shows_it_once(client, staff):
    client.force_login(staff)
    response = client.post(URL, {"name": "rack 4"})
    assert response.status_code == 200
    content = response.content.decode()
    plaintext = response.context["new_token"]
    assert RAW_TOKEN.fullmatch(plaintext)
    assert set(RAW_TOKEN.findall(content)) == {plaintext}
    assert "will not be shown again" in content
    assert 'data-copy="#new-token-value"' in content
    # The exact command to run on a GPU machine, with this server's URL.
    assert f"export GPUCLOUD_JOIN_TOKEN={plaintext}\npython -m gpunode --server http://testserver" in content
    assert "no-store" in response["Cache-Control"]

    token = JoinToken.objects.get()
    assert token.name == "rack 4"
    assert token.created_by == staff
    assert plaintext.startswith(f"gpcj_{token.prefix}_")
    # Only the prefix and a keyed hash are stored, never the token itself.
    stored = JoinToken.objects.filter(pk=token.pk).values().get()
    assert all(plaintext not in str(value) for value in stored.values())
    # The token works: a machine can join with it.
    node, _ = node_register(
        token=plaintext, name="box", host="", engine="simulated", slots=8, gpus=[], protocol=PROTOCOL
    )
    assert node.join_token == token

    # Never again: not on the next page view.
    content = client.get(URL).content.decode()
    assert plaintext not in content
    assert not RAW_TOKEN.search(content)
    assert f"gpcj_{token.prefix}…" in content


def test_it_uses_the_server_url_as_reached(client, staff):
    client.force_login(staff)
    response = client.post(URL, {"name": "rack 4"}, secure=True, headers={"host": "localhost"})
    assert "python -m gpunode --server https://localhost</pre>" in response.content.decode()


def test_it_rejects_invalid_input(client, staff):
    client.force_login(staff)
    response = client.post(URL, {"name": ""})
    assert response.status_code == 400
    assert response.context["form"].errors["name"]
    assert response.context["new_token"] is None
    assert "The token was not created" in response.content.decode()
    assert not JoinToken.objects.exists()


def test_it_requires_csrf(staff):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(staff)
    assert csrf_client.post(URL, {"name": "rack 4"}).status_code == 403
    assert not JoinToken.objects.exists()


# --- Revoking a token -----------------------------------------------------------------------


@pytest.fixture
def token(staff):
    return join_token_create(name="rack 3", created_by=staff)[0]


def _revoke_url(token: JoinToken) -> str:
    return reverse("fleet:token-revoke", args=[token.pk])


def test_revoke_shows_confirmation(client, staff, token):
    client.force_login(staff)
    response = client.get(_revoke_url(token))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Revoke “rack 3”?" in content
    assert f"gpcj_{token.prefix}…" in content
    assert 'method="post"' in content
    assert "csrfmiddlewaretoken" in content
    assert URL in content  # the cancel link
    token.refresh_from_db()
    assert token.is_active


def test_revoke_works(client, staff, token):
    client.force_login(staff)
    response = client.post(_revoke_url(token))
    assert response.status_code == 302
    assert response.url == URL
    token.refresh_from_db()
    assert not token.is_active

    content = client.get(URL).content.decode()
    assert "Revoked “rack 3”" in content  # the flash message
    assert "state-revoked" in content
    assert _revoke_url(token) not in content


def test_revoke_requires_post(client, staff, token):
    client.force_login(staff)
    client.get(_revoke_url(token))
    assert client.put(_revoke_url(token)).status_code == 405
    token.refresh_from_db()
    assert token.is_active


def test_revoke_rejects_outsider(client, user, token):
    client.force_login(user)
    assert client.get(_revoke_url(token)).status_code == 403
    assert client.post(_revoke_url(token)).status_code == 403
    token.refresh_from_db()
    assert token.is_active


def test_revoke_requires_login(client, token):
    url = _revoke_url(token)
    response = client.post(url)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"
    token.refresh_from_db()
    assert token.is_active


def test_revoke_handles_already_revoked(client, staff, token):
    client.force_login(staff)
    client.post(_revoke_url(token))
    response = client.get(_revoke_url(token))
    assert response.status_code == 200
    assert b"already revoked" in response.content


def test_revoke_404s_for_unknown_token(client, staff):
    client.force_login(staff)
    assert client.get(reverse("fleet:token-revoke", args=[999])).status_code == 404

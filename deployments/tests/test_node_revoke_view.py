import pytest
from django.urls import reverse

from deployments.fleet import Refused, join_token_create, node_authenticate, node_heartbeat, node_register
from deployments.models import WorkerNode
from nodeprotocol import VERSION as PROTOCOL

pytestmark = pytest.mark.django_db


@pytest.fixture
def joined():
    """(node, its credential) for a node that joined with a join token."""
    _, token = join_token_create(name="rack 3")
    return node_register(
        token=token, name="gpu-box", host="rack3.example.net", engine="simulated", slots=8, gpus=[], protocol=PROTOCOL
    )


def _url(node: WorkerNode) -> str:
    return reverse("fleet:node-revoke", args=[node.pk])


def test_it_shows_confirmation(client, staff, joined):
    node, _ = joined
    client.force_login(staff)
    response = client.get(_url(node))
    assert response.status_code == 200
    content = response.content.decode()
    assert f"Revoke the credential of “{node.name}”?" in content
    assert f"gpcn_{node.credential_prefix}…" in content
    assert "rack 3" in content  # the join token it came with
    assert 'method="post"' in content
    assert "csrfmiddlewaretoken" in content
    assert reverse("fleet:fleet") in content  # the cancel link
    node.refresh_from_db()
    assert node.credential_revoked_at is None
    assert node.hashed_credential not in content


def test_it_works(client, staff, joined):
    node, credential = joined
    client.force_login(staff)
    response = client.post(_url(node))
    assert response.status_code == 302
    assert response.url == reverse("fleet:fleet")
    node.refresh_from_db()
    assert node.credential_revoked_at is not None
    # The node can no longer connect, nor go on heartbeating.
    with pytest.raises(Refused):
        node_authenticate(credential)
    with pytest.raises(Refused):
        node_heartbeat(node.pk, {"in_flight": 0})

    content = client.get(response.url).content.decode()
    assert f"Revoked the credential of “{node.name}”" in content  # the flash message


def test_it_requires_post(client, staff, joined):
    node, _ = joined
    client.force_login(staff)
    client.get(_url(node))
    assert client.put(_url(node)).status_code == 405
    node.refresh_from_db()
    assert node.credential_revoked_at is None


def test_it_rejects_outsider(client, user, joined):
    node, _ = joined
    client.force_login(user)
    assert client.get(_url(node)).status_code == 403
    assert client.post(_url(node)).status_code == 403
    node.refresh_from_db()
    assert node.credential_revoked_at is None


def test_it_requires_login(client, joined):
    node, _ = joined
    url = _url(node)
    response = client.post(url)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"
    node.refresh_from_db()
    assert node.credential_revoked_at is None


def test_it_handles_already_revoked(client, staff, joined):
    node, _ = joined
    client.force_login(staff)
    client.post(_url(node))
    revoked_at = WorkerNode.objects.get(pk=node.pk).credential_revoked_at
    response = client.get(_url(node))
    assert response.status_code == 200
    assert b"already revoked" in response.content
    # Posting again changes nothing.
    client.post(_url(node))
    assert WorkerNode.objects.get(pk=node.pk).credential_revoked_at == revoked_at


def test_it_404s_for_unknown_node(client, staff):
    client.force_login(staff)
    assert client.get(reverse("fleet:node-revoke", args=[999])).status_code == 404

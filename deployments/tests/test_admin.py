import pytest
from django.urls import reverse

from deployments.fleet import join_token_create, node_register
from deployments.models import JoinToken, WorkerNode

pytestmark = pytest.mark.django_db


@pytest.fixture
def joined(admin_user):
    """A join token and a node that joined with it, with their plaintext credentials."""
    token, token_plaintext = join_token_create(name="rack 3", created_by=admin_user)
    gpus = [{"index": 0, "name": "A100-80GB", "memory_total_mb": 81920}]
    node, credential = node_register(
        token=token_plaintext, name="gpu-box", host="rack3.example.net", engine="simulated", slots=8, gpus=gpus
    )
    return token, token_plaintext, node, credential


def _pages(token: JoinToken, node: WorkerNode) -> list[str]:
    return [
        reverse("admin:deployments_jointoken_changelist"),
        reverse("admin:deployments_jointoken_change", args=[token.pk]),
        reverse("admin:deployments_workernode_changelist"),
        reverse("admin:deployments_workernode_change", args=[node.pk]),
    ]


def test_it_works(admin_client, joined):
    token, _, node, _ = joined
    for url in _pages(token, node):
        assert admin_client.get(url).status_code == 200, url


def test_it_never_shows_hashes_or_secrets(admin_client, joined):
    token, token_plaintext, node, credential = joined
    for url in _pages(token, node):
        content = admin_client.get(url).content.decode()
        for secret in (token.hashed_token, node.hashed_credential, token_plaintext, credential):
            assert secret not in content, url


def test_it_shows_prefixes_and_status(admin_client, joined):
    token, _, node, _ = joined
    content = admin_client.get(reverse("admin:deployments_jointoken_changelist")).content.decode()
    assert f"gpcj_{token.prefix}…" in content
    content = admin_client.get(reverse("admin:deployments_workernode_change", args=[node.pk])).content.decode()
    assert f"gpcn_{node.credential_prefix}…" in content
    assert "Offline" in content  # registered, never heartbeated


def test_it_has_no_add_pages(admin_client):
    assert admin_client.get(reverse("admin:deployments_jointoken_add")).status_code == 403
    assert admin_client.get(reverse("admin:deployments_workernode_add")).status_code == 403


def test_it_keeps_nodes_read_only(admin_client, joined):
    _, _, node, _ = joined
    url = reverse("admin:deployments_workernode_change", args=[node.pk])
    admin_client.post(url, {"name": "renamed", "slots": "1"})
    node.refresh_from_db()
    assert node.name.startswith("gpu-box-")
    assert node.slots == 8


def test_revoke_token_action(admin_client, joined):
    token, _, _, _ = joined
    response = admin_client.post(
        reverse("admin:deployments_jointoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 join token(s)." in response.content.decode()
    token.refresh_from_db()
    assert not token.is_active


def test_revoke_credential_action(admin_client, joined):
    _, _, node, _ = joined
    response = admin_client.post(
        reverse("admin:deployments_workernode_changelist"),
        {"action": "revoke_credential", "_selected_action": [node.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked the credential of 1 node(s)." in response.content.decode()
    node.refresh_from_db()
    assert node.credential_revoked_at is not None


def test_it_keeps_deployment_admin(admin_client, catalog):
    deployment = catalog[0]
    assert (
        admin_client.get(reverse("admin:deployments_catalogmodel_change", args=[deployment.model.pk])).status_code
        == 200
    )
    assert admin_client.get(reverse("admin:deployments_deployment_change", args=[deployment.pk])).status_code == 200


def test_it_requires_staff(client, user):
    client.force_login(user)
    assert client.get(reverse("admin:deployments_workernode_changelist")).status_code == 302

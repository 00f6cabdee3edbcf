import re

import pytest
from django.urls import reverse

from deployments.fleet import join_token_create, node_register
from deployments.models import JoinToken, Trust, WorkerNode
from marketplace.models import HostProfile
from marketplace.services import host_become, host_join_token_create
from nodeprotocol import VERSION as PROTOCOL

pytestmark = pytest.mark.django_db

URL = reverse("marketplace:host")
RAW_TOKEN = re.compile(r"gpcj_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


def _register(plaintext: str, name: str = "box") -> WorkerNode:
    node, _ = node_register(
        token=plaintext, name=name, host="", engine="simulated", slots=4, gpus=[], protocol=PROTOCOL
    )
    return node


def test_it_requires_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_any_user_becomes_a_host(client, user, settings):
    settings.HOST_REVENUE_SHARE = "0.65"
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200 and "Become a host" in response.content.decode()
    response = client.post(URL, {"display_name": "Ada's GPUs", "payout_details": "IBAN DE00 1234"})
    assert response.status_code == 302
    host = HostProfile.objects.get(user=user)
    assert host.display_name == "Ada's GPUs" and host.payout_details == "IBAN DE00 1234"
    assert str(host.revenue_share) == "0.6500"
    assert "Your nodes" in client.get(URL).content.decode()


def test_a_host_token_is_shown_once_and_makes_community_nodes(client, user):
    host_become(user=user, display_name="Ada")
    client.force_login(user)
    response = client.post(
        reverse("marketplace:token-create"), {"name": "home 4090", "expires_in_days": 3, "max_uses": 1}
    )
    assert response.status_code == 200
    plaintext = RAW_TOKEN.search(response.content.decode()).group(0)
    assert "no-store" in response["Cache-Control"]
    token = JoinToken.objects.get(name="home 4090")
    assert token.trust == Trust.COMMUNITY and token.created_by == user and token.max_uses == 1
    assert plaintext not in client.get(URL).content.decode()  # never again

    node = _register(plaintext)
    assert node.trust == Trust.COMMUNITY and node.owner == user
    page = client.get(URL).content.decode()
    assert node.name in page and "Community" in page and "1 of 1" in page


def test_staff_tokens_make_trusted_nodes(staff):
    _, plaintext = join_token_create(name="rack", created_by=staff)
    node = _register(plaintext)
    assert node.trust == Trust.TRUSTED and node.owner is None


def test_a_host_sees_and_revokes_only_its_own_nodes(client, user, outsider, staff):
    mine = host_become(user=user, display_name="Ada")
    theirs = host_become(user=outsider, display_name="Bob")
    my_node = _register(host_join_token_create(host=mine, name="a")[1], "mine")
    their_node = _register(host_join_token_create(host=theirs, name="b")[1], "theirs")
    trusted_node = _register(join_token_create(name="rack", created_by=staff)[1], "rack")

    client.force_login(user)
    page = client.get(URL).content.decode()
    assert my_node.name in page and their_node.name not in page and trusted_node.name not in page
    for node in (their_node, trusted_node):
        assert client.get(reverse("marketplace:node-revoke", args=[node.pk])).status_code == 404
        assert client.post(reverse("marketplace:node-revoke", args=[node.pk])).status_code == 404
        node.refresh_from_db()
        assert node.credential_revoked_at is None

    assert client.post(reverse("marketplace:node-revoke", args=[my_node.pk])).status_code == 302
    my_node.refresh_from_db()
    assert my_node.credential_revoked_at is not None


def test_a_host_sees_its_nodes_reliability_and_uptime(client, user):
    host = host_become(user=user, display_name="Ada")
    node = _register(host_join_token_create(host=host, name="a")[1], "mine")
    WorkerNode.objects.filter(pk=node.pk).update(reliability=0.42, reliability_detail={"uptime": 0.875})

    client.force_login(user)
    page = client.get(URL).content.decode()

    assert '<td class="num" data-reliability="0.42">42%</td>' in page
    assert "88% up, last 7 days" in page


def test_a_host_revokes_only_its_own_tokens(client, user, outsider):
    mine = host_become(user=user, display_name="Ada")
    theirs = host_become(user=outsider, display_name="Bob")
    their_token, _ = host_join_token_create(host=theirs, name="b")
    my_token, _ = host_join_token_create(host=mine, name="a")
    client.force_login(user)
    assert client.post(reverse("marketplace:token-revoke", args=[their_token.pk])).status_code == 404
    assert client.post(reverse("marketplace:token-revoke", args=[my_token.pk])).status_code == 302
    their_token.refresh_from_db(), my_token.refresh_from_db()
    assert their_token.revoked_at is None and my_token.revoked_at is not None


def test_a_user_who_is_not_a_host_cannot_create_tokens(client, user):
    client.force_login(user)
    response = client.post(reverse("marketplace:token-create"), {"name": "x", "expires_in_days": 3})
    assert response.status_code == 302
    assert not JoinToken.objects.exists()


def test_it_rejects_a_bad_token_form(client, user):
    host_become(user=user, display_name="Ada")
    client.force_login(user)
    response = client.post(reverse("marketplace:token-create"), {"name": "x", "expires_in_days": 0, "max_uses": -1})
    assert response.status_code == 400
    assert not JoinToken.objects.exists()

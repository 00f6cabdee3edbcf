"""Join tokens' expiry and use limits, enforced at registration: also under concurrent registrations
through the real web processes."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from deployments.fleet import Refused, join_token_create, node_register
from deployments.models import JoinToken, WorkerNode
from nodeprotocol import VERSION as PROTOCOL


def _register(plaintext: str):
    return node_register(token=plaintext, name="box", host="", engine="simulated", slots=4, gpus=[], protocol=PROTOCOL)


@pytest.mark.django_db
def test_an_expired_token_is_refused():
    token, plaintext = join_token_create(name="t", expires_at=timezone.now() + timedelta(hours=1))
    _register(plaintext)
    JoinToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Refused, match="expired"):
        _register(plaintext)
    assert WorkerNode.objects.count() == 1


@pytest.mark.django_db
def test_a_token_joins_at_most_max_uses_machines():
    token, plaintext = join_token_create(name="t", max_uses=2)
    _register(plaintext)
    _register(plaintext)
    with pytest.raises(Refused, match="used as many times"):
        _register(plaintext)
    token.refresh_from_db()
    assert token.uses == 2 and WorkerNode.objects.count() == 2


def test_concurrent_registrations_never_exceed_max_uses(live):
    token, plaintext = join_token_create(name="race", max_uses=3)
    body = {"token": plaintext, "name": "racer", "engine": "simulated", "slots": 1, "gpus": [], "protocol": PROTOCOL}

    def register(_):
        return httpx.post(f"{live.url}/api/workers/register", json=body, timeout=30).status_code

    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(register, range(12)))
        assert statuses.count(201) == 3, statuses
        assert set(statuses) <= {201, 401}, statuses
        token.refresh_from_db()
        assert token.uses == 3
        assert WorkerNode.objects.filter(join_token=token).count() == 3
    finally:
        WorkerNode.objects.filter(join_token=token).delete()

"""trusted_only keys and accounts, across real node processes: their requests never run on a
community node, and a model with only community capacity refuses them at admission."""

from __future__ import annotations

import threading
import uuid

import httpx
import openai
import pytest
from django.contrib.auth import get_user_model

from deployments.models import Trust
from inference.models import UsageRecord
from marketplace.services import account_trusted_only_set, host_become, host_join_token_create

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"


def _chat(url: str, key: str, label: str = "") -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Hello {label}"}], "max_tokens": 20}
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60)


def community_worker(fleet, name: str):
    """A host (a fresh user) and a real node process joined with the host's own token."""
    owner = get_user_model().objects.create_user(f"host-{uuid.uuid4().hex[:8]}", password="host password")
    host = host_become(user=owner, display_name="A host")
    _, token = host_join_token_create(host=host, name="my box")
    fleet.start_worker(name, env={"GPUCLOUD_JOIN_TOKEN": token})
    return host


def test_trusted_only_never_runs_on_community_nodes(fleet, make_key):
    host = community_worker(fleet, "comm")
    community = fleet.wait_serving("comm")
    assert community.trust == Trust.COMMUNITY and community.owner == host.user

    _, anything_key = make_key(fleet.user, rpm=1000)
    trusted_key_row, trusted_key = make_key(fleet.user, name="trusted", rpm=1000, trusted_only=True)

    # Only community capacity: a trusted_only key is refused before queueing, in the OpenAI shape.
    client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=trusted_key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "no_trusted_capacity"
    assert "community" in refused.value.body["message"]
    # Any other key is served by the community node.
    response = _chat(fleet.url, anything_key)
    assert response.status_code == 200, response.text
    assert UsageRecord.objects.get(request_id=response.headers["x-request-id"]).worker == community.name

    # A trusted node joins too, and both serve the model.
    fleet.start_worker("trusted")
    fleet.wait_online("trusted")
    fleet.scale(MODEL, replicas=2, placement="spread")
    trusted = fleet.wait_serving("trusted")
    fleet.wait_serving("comm")
    assert trusted.trust == Trust.TRUSTED

    results: dict[str, list] = {"trusted": [], "any": []}

    def call(kind: str, key: str, i: int):
        results[kind].append(_chat(fleet.url, key, f"{kind} {i}"))

    threads = [threading.Thread(target=call, args=("trusted", trusted_key, i)) for i in range(8)]
    threads += [threading.Thread(target=call, args=("any", anything_key, i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    for response in results["trusted"] + results["any"]:
        assert response.status_code == 200, response.text
    trusted_workers = set(
        UsageRecord.objects.filter(request_id__in=[r.headers["x-request-id"] for r in results["trusted"]]).values_list(
            "worker", flat=True
        )
    )
    assert trusted_workers == {trusted.name}
    any_workers = set(
        UsageRecord.objects.filter(request_id__in=[r.headers["x-request-id"] for r in results["any"]]).values_list(
            "worker", flat=True
        )
    )
    assert community.name in any_workers  # the community node took work meanwhile: it was not idle by chance

    # The account-wide choice works the same way, for every key of the account.
    account_trusted_only_set(user=fleet.user, trusted_only=True)
    try:
        responses = [_chat(fleet.url, anything_key, f"account {i}") for i in range(4)]
        workers = set(
            UsageRecord.objects.filter(request_id__in=[r.headers["x-request-id"] for r in responses]).values_list(
                "worker", flat=True
            )
        )
        assert workers == {trusted.name}
    finally:
        account_trusted_only_set(user=fleet.user, trusted_only=False)
    assert trusted_key_row.trusted_only

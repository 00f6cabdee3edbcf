"""Earnings across real node processes: a request served by a community node credits its host;
a stream whose community node dies mid-way pays both nodes for the tokens each produced."""

from __future__ import annotations

import signal
from decimal import Decimal

import httpx
import pytest

from conftest import long_seeds, wait_for
from inference.models import UsageRecord
from inference.tests.test_worker_failure import MESSAGES, SLOW_MODEL, Call
from marketplace.models import EarningEntry
from marketplace.tests.test_trusted_routing import community_worker

pytestmark = pytest.mark.live

PLACES = Decimal("0.00000001")


def test_a_community_node_s_host_earns_from_what_it_serves(fleet, make_key):
    host = community_worker(fleet, "earner")
    node = fleet.wait_serving("earner")
    _, key = make_key(fleet.user, rpm=1000)
    body = {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30}
    response = httpx.post(
        f"{fleet.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    record = UsageRecord.objects.get(request_id=request_id)
    assert record.worker == node.name and record.cost > 0
    entry = EarningEntry.objects.get(request_id=request_id)
    assert entry.host == host and entry.node_id == node.pk
    assert entry.amount == (record.cost * host.revenue_share).quantize(PLACES)


def test_a_stream_that_failed_over_pays_each_node_for_its_tokens(fleet, make_key):
    _, key = make_key(fleet.user, rpm=1000)
    first_host = community_worker(fleet, "doomed")
    first = fleet.wait_serving("doomed")
    second_host = community_worker(fleet, "rescuer")
    fleet.wait_online("rescuer")  # no replica yet: the doomed node's comes to it when it dies

    seed = long_seeds(SLOW_MODEL, MESSAGES, count=1, min_tokens=90)[0]
    stream = Call(fleet, key, seed=seed, max_tokens=90, stream=True)
    assert stream.first_text.wait(timeout=15)
    wait_for(lambda: len(stream.text) > 40, timeout=10, message="some text from the doomed node")
    fleet.processes["doomed"].send_signal(signal.SIGKILL)
    stream.join(timeout=60)
    assert stream.status == 200 and stream.events[-1] == "[DONE]"
    assert not any('"error"' in event for event in stream.events)

    second = fleet.node("rescuer")
    record = UsageRecord.objects.get(request_id=stream.request_id)
    assert record.worker == second.name
    entries = {e.node_id: e for e in EarningEntry.objects.filter(request_id=stream.request_id)}
    assert set(entries) == {first.pk, second.pk}
    assert entries[first.pk].host == first_host and entries[second.pk].host == second_host
    assert entries[first.pk].completion_tokens > 0 and entries[second.pk].completion_tokens > 0
    assert entries[first.pk].completion_tokens + entries[second.pk].completion_tokens == record.completion_tokens
    assert entries[first.pk].charge + entries[second.pk].charge == record.cost
    for entry in entries.values():
        assert entry.amount == (entry.charge * entry.host.revenue_share).quantize(PLACES)

"""Outages heal by themselves: Redis stopping and coming back under live streams."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from billing.selectors import reconciliation_differences
from conftest import IsolatedPlatform, long_seeds, wait_for
from deployments.models import Deployment, Replica
from inference.models import UsageRecord

pytestmark = pytest.mark.live

MODEL = "mistral-7b-instruct-v0.3"
MESSAGES = [{"role": "user", "content": "Keep talking through the outage."}]


@pytest.fixture
def isolated(fleet, tmp_path):
    platform = IsolatedPlatform(fleet, tmp_path)
    try:
        fleet.wait_serving("isolated", timeout=60)
        yield platform
    finally:
        platform.close()


def _stream(url: str, key: str, seed: int, outcome: dict) -> None:
    """One streamed request, read as a client would: every SSE line, until the server ends it."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "seed": seed, "max_tokens": 200}
    lines = []
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as response:
            outcome["status"] = response.status_code
            outcome["request_id"] = response.headers.get("x-request-id")
            outcome["content_type"] = response.headers.get("content-type", "")
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                    outcome["started"] = True
    except httpx.HTTPError as error:
        outcome["error"] = repr(error)
    outcome["lines"] = lines


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_streams_in_flight_end_cleanly_and_the_platform_heals_after_a_redis_restart(isolated, fleet, make_key):
    _, key = make_key(fleet.user, rpm=10_000)
    placed_before = sorted(Replica.objects.values_list("deployment_id", "node_id"))
    seeds = long_seeds(MODEL, MESSAGES, 4)
    outcomes = [{} for _ in seeds]
    threads = [
        threading.Thread(target=_stream, args=(isolated.url, key, seed, outcome), daemon=True)
        for seed, outcome in zip(seeds, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(o.get("started") for o in outcomes), timeout=30, message="every stream to start")

    isolated.stop_redis()
    time.sleep(3)  # the outage
    isolated.start_redis()

    for thread in threads:
        thread.join(timeout=60)
    for outcome in outcomes:
        assert not [t for t in threads if t.is_alive()], "a stream hung"
        assert "error" not in outcome, outcome
        assert outcome["status"] == 200 and outcome["content_type"].startswith("text/event-stream")
        assert outcome["lines"][-1] == "data: [DONE]", outcome["lines"][-3:]
        events = [json.loads(line.removeprefix("data: ")) for line in outcome["lines"][:-1]]
        assert all("choices" in e or "error" in e for e in events)  # chunks, or an OpenAI error event

    # Healed: healthy, serving, nothing unplaced.
    wait_for(lambda: _healthy(isolated.url), timeout=10, message="/health to answer 200 again")

    def served() -> bool:
        response = httpx.post(
            f"{isolated.url}/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "max_tokens": 5},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        return response.status_code == 200

    wait_for(served, timeout=10, interval=0.5, message="a request to succeed again")
    assert sorted(Replica.objects.values_list("deployment_id", "node_id")) == placed_before
    assert set(Deployment.objects.values_list("status", flat=True)) == {Deployment.Status.RUNNING}
    # Every stream is metered, with what became of it, and billed for what it was sent: no charge
    # lost, none counted twice.
    for outcome in outcomes:
        record = wait_for(lambda o=outcome: UsageRecord.objects.filter(request_id=o["request_id"]).first(), timeout=10)
        assert record.status_code in (200, 502, 503)
    assert reconciliation_differences() == []

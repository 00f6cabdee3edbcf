"""Nothing is lost when a worker dies (SIGKILL), and a worker drains cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from conftest import long_seeds, wait_for
from deployments.models import WorkerNode
from inference.models import UsageRecord

pytestmark = pytest.mark.live

# The slowest demo model (~15 tokens/s on its simulated H100): requests last a few seconds.
SLOW_MODEL = "qwen2.5-72b-instruct"
MESSAGES = [{"role": "user", "content": "Tell me about GPUs."}]


class Call(threading.Thread):
    """A chat request in the background, streamed or not; keeps what the client saw."""

    def __init__(self, live, key: str, *, seed: int, max_tokens: int, stream: bool) -> None:
        super().__init__()
        self.url, self.key = live.url, key
        self.body = {
            "model": SLOW_MODEL,
            "messages": MESSAGES,
            "seed": seed,
            "max_tokens": max_tokens,
            "stream": stream,
        }
        self.status = None
        self.text = ""
        self.events: list = []
        self.request_id = ""
        self.finished_at = 0.0
        self.first_text = threading.Event()
        self.start()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=self.body, headers=headers, timeout=60) as r:
            self.status, self.request_id = r.status_code, r.headers["x-request-id"]
            if r.status_code != 200:
                self.events.append(r.read().decode())
            elif not self.body["stream"]:
                self.text = json.loads(r.read())["choices"][0]["message"]["content"]
            else:
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    self.events.append(line[6:])
                    if line[6:] != "[DONE]":
                        chunk = json.loads(line[6:])
                        for choice in chunk.get("choices", []):
                            self.text += choice["delta"].get("content") or ""
                            if self.text:
                                self.first_text.set()
        self.finished_at = time.monotonic()


def _reference(live, key: str, seed: int, max_tokens: int) -> dict:
    """The same request served in one go: its message and usage."""
    body = {"model": SLOW_MODEL, "messages": MESSAGES, "seed": seed, "max_tokens": max_tokens}
    response = httpx.post(
        f"{live.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    return response.json()


def _in_flight(live, worker_name: str) -> int:
    node = live.node(worker_name)
    return node.telemetry.get("in_flight", 0) if node else 0


def test_requests_of_a_killed_worker_complete_elsewhere(fleet, make_key):
    _, key = make_key(fleet.user, rpm=1000)
    seeds = long_seeds(SLOW_MODEL, MESSAGES, count=4)
    fleet.start_worker("rescuer", "--slots=2")
    rescuer = fleet.wait_serving("rescuer").name
    # Keep the rescuer busy, so that the next requests go to the doomed worker.
    blockers = [Call(fleet, key, seed=seed, max_tokens=120, stream=False) for seed in seeds[2:]]
    wait_for(lambda: _in_flight(fleet, "rescuer") == 2, timeout=5, message="the rescuer to be busy")
    fleet.scale(SLOW_MODEL, replicas=2)  # the second replica goes to the next node that joins
    doomed = fleet.start_worker("doomed", "--slots=2")
    fleet.wait_serving("doomed")

    stream = Call(fleet, key, seed=seeds[0], max_tokens=120, stream=True)
    whole = Call(fleet, key, seed=seeds[1], max_tokens=120, stream=False)
    assert stream.first_text.wait(timeout=15)
    wait_for(lambda: _in_flight(fleet, "doomed") == 2, timeout=5, message="both requests on the doomed worker")
    # Not yet started: both workers are full.
    waiting = Call(fleet, key, seed=7, max_tokens=20, stream=False)
    assert stream.is_alive() and whole.is_alive() and all(b.is_alive() for b in blockers)
    doomed.send_signal(signal.SIGKILL)

    calls = [stream, whole, waiting, *blockers]
    for call in calls:
        call.join(timeout=60)
    assert [call.status for call in calls] == [200] * 5
    assert stream.events[-1] == "[DONE]"
    assert not any('"error"' in event for event in stream.events)
    # One uninterrupted stream, no text repeated: the same text as the request served in one go.
    reference = _reference(fleet, key, seed=seeds[0], max_tokens=120)
    assert stream.text == reference["choices"][0]["message"]["content"]
    assert whole.text == _reference(fleet, key, seed=seeds[1], max_tokens=120)["choices"][0]["message"]["content"]
    records = UsageRecord.objects.filter(request_id__in=[call.request_id for call in calls])
    assert records.count() == 5
    assert {r.status_code for r in records} == {200}
    assert {r.worker for r in records} == {rescuer}
    assert records.get(request_id=stream.request_id).completion_tokens == reference["usage"]["completion_tokens"]


def test_sigterm_drains_the_worker(fleet, make_key):
    _, key = make_key(fleet.user, rpm=1000)
    draining = fleet.start_worker("draining", "--slots=2")
    node = fleet.wait_serving("draining")

    seed = long_seeds(SLOW_MODEL, MESSAGES, count=1, min_tokens=40)[0]
    held = Call(fleet, key, seed=seed, max_tokens=40, stream=True)
    assert held.first_text.wait(timeout=15)
    draining.send_signal(signal.SIGTERM)
    wait_for(
        lambda: WorkerNode.objects.get(pk=node.pk).status == WorkerNode.Status.DRAINING, timeout=5, message="draining"
    )

    # A draining node serves no new requests: with no other node, the model has no replica.
    refused = Call(fleet, key, seed=32, max_tokens=5, stream=False)
    refused.join(timeout=10)
    assert refused.status == 503
    fleet.start_worker("successor")
    successor = fleet.wait_serving("successor").name
    later = Call(fleet, key, seed=32, max_tokens=5, stream=False)

    held.join(timeout=30)
    later.join(timeout=30)
    assert draining.wait(timeout=30) == 0
    assert held.status == 200 and held.events[-1] == "[DONE]"
    assert held.text == _reference(fleet, key, seed=seed, max_tokens=40)["choices"][0]["message"]["content"]
    assert UsageRecord.objects.get(request_id=held.request_id).worker == node.name
    assert later.status == 200
    assert UsageRecord.objects.get(request_id=later.request_id).worker == successor
    assert WorkerNode.objects.get(pk=node.pk).status == WorkerNode.Status.LEFT

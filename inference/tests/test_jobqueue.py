"""inference.jobqueue: jobs go onto Celery queues with priorities and come off in kombu's order."""

from __future__ import annotations

import json

import pytest

from gpucloud.redis_client import get_redis
from inference import jobqueue

QUEUES = ["deployment.jobqueue-test-a", "deployment.jobqueue-test-b"]


@pytest.fixture(autouse=True)
def empty_queues():
    keys = jobqueue.priority_keys(QUEUES)
    get_redis().delete(*keys)
    yield
    get_redis().delete(*keys)


def _enqueue(queue: str, priority: int, request_id: str) -> None:
    jobqueue.enqueue(
        queue=queue,
        priority=priority,
        request_id=request_id,
        attempt=1,
        kind="generate",
        spec={"n": 1},
        reply_channel="specific.test!x",
        limits={"prompt_tokens": 3, "completion_tokens": 5},
    )


def _pop_all() -> list[jobqueue.QueuedJob]:
    popped = []
    while item := get_redis().brpop(jobqueue.priority_keys(QUEUES), timeout=1):
        popped.append(jobqueue.decode(item[0].decode(), item[1]))
    return popped


def test_it_pops_by_priority_then_in_order():
    _enqueue(QUEUES[0], 6, "req_low")
    _enqueue(QUEUES[1], 3, "req_standard_b")
    _enqueue(QUEUES[0], 3, "req_standard_a1")
    _enqueue(QUEUES[0], 3, "req_standard_a2")
    _enqueue(QUEUES[1], 0, "req_high")

    jobs = _pop_all()

    assert [j.request_id for j in jobs] == [
        "req_high",
        "req_standard_a1",
        "req_standard_a2",
        "req_standard_b",
        "req_low",
    ]
    assert jobs[0].queue == QUEUES[1] and jobs[-1].queue == QUEUES[0]
    assert (jobs[0].kind, jobs[0].spec, jobs[0].reply_channel) == ("generate", {"n": 1}, "specific.test!x")
    assert jobs[0].limits == {"prompt_tokens": 3, "completion_tokens": 5}


def test_a_message_that_is_no_job_is_dropped():
    key = jobqueue.priority_keys(QUEUES)[0]
    not_a_job = {"headers": {"task": "celery.backend_cleanup"}, "body": "[]", "properties": {}}

    assert jobqueue.decode(key, json.dumps(not_a_job).encode()) is None
    assert jobqueue.decode(key, b"\xff not json") is None


def test_queue_of_strips_only_priority_suffixes():
    sep = jobqueue.priority_keys(["q"])[1].removeprefix("q")[:-1]
    assert jobqueue.queue_of(f"deployment.x{sep}6") == "deployment.x"
    assert jobqueue.queue_of("deployment.x") == "deployment.x"
    assert jobqueue.queue_of(f"deployment.x{sep}not-a-step") == f"deployment.x{sep}not-a-step"

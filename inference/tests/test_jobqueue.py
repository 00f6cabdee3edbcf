"""inference.jobqueue: jobs go onto Celery queues per deployment and account, with priorities, and
come off most urgent first, the accounts taking turns within a priority."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from gpucloud.redis_client import get_redis
from inference import jobqueue

QUEUES = ["deployment.jobqueue-test-a", "deployment.jobqueue-test-b"]
ALICE, BOB = 101, 202


@pytest.fixture(autouse=True)
def empty_queues():
    def clean():
        redis = get_redis()
        for queue in QUEUES:
            keys = jobqueue.priority_keys([queue] + [jobqueue.account_queue(queue, a) for a in (ALICE, BOB)])
            redis.delete(*keys, f"gpucloud:active:{queue}")

    clean()
    yield
    clean()


def _enqueue(queue: str, priority: int, request_id: str, account: int = ALICE) -> None:
    jobqueue.enqueue(
        queue=queue,
        account=account,
        priority=priority,
        request_id=request_id,
        attempt=1,
        kind="generate",
        spec={"n": 1},
        reply_channel="specific.test!x",
        limits={"prompt_tokens": 3, "completion_tokens": 5},
    )


def _pop_all() -> list[jobqueue.QueuedJob]:
    """Pop as a dispatcher does, turn after turn, until nothing is left (wake-ups skipped)."""

    async def pop():
        redis = aioredis.Redis.from_url(settings.REDIS_URL)
        popped, turn = [], 0
        try:
            while True:
                turn += 1
                keys = jobqueue.take_keys(await jobqueue.active_accounts(redis, QUEUES), QUEUES, turn)
                item = await redis.brpop(keys, timeout=1)
                if item is None:
                    return popped
                job = jobqueue.decode(item[0].decode(), item[1])
                if job is not None:
                    popped.append(job)
        finally:
            await redis.aclose()

    return asyncio.run(pop())


def test_it_pops_by_priority_then_in_order():
    _enqueue(QUEUES[0], 6, "req_low")
    _enqueue(QUEUES[1], 3, "req_standard_b")
    _enqueue(QUEUES[0], 3, "req_standard_a1")
    _enqueue(QUEUES[0], 3, "req_standard_a2")
    _enqueue(QUEUES[1], 0, "req_high")

    jobs = _pop_all()

    assert jobs[0].request_id == "req_high" and jobs[-1].request_id == "req_low"
    standard = [j.request_id for j in jobs[1:-1]]
    assert sorted(standard) == ["req_standard_a1", "req_standard_a2", "req_standard_b"]
    assert standard.index("req_standard_a1") < standard.index("req_standard_a2")  # in order within a queue
    assert jobs[0].queue == QUEUES[1] and jobs[-1].queue == QUEUES[0]
    assert (jobs[0].kind, jobs[0].spec, jobs[0].reply_channel) == ("generate", {"n": 1}, "specific.test!x")
    assert jobs[0].limits == {"prompt_tokens": 3, "completion_tokens": 5}


def test_a_burst_from_one_account_does_not_queue_another_behind_it():
    for i in range(10):
        _enqueue(QUEUES[0], 3, f"req_alice_{i}", account=ALICE)
    _enqueue(QUEUES[0], 3, "req_bob_0", account=BOB)
    _enqueue(QUEUES[0], 3, "req_bob_1", account=BOB)

    order = [j.request_id for j in _pop_all()]

    assert len(order) == 12
    assert order.index("req_bob_0") <= 2 and order.index("req_bob_1") <= 4  # turns, not the end of the line
    assert [r for r in order if r.startswith("req_alice")] == [f"req_alice_{i}" for i in range(10)]


def test_a_new_account_wakes_a_waiting_dispatcher():
    async def scenario():
        redis = aioredis.Redis.from_url(settings.REDIS_URL)
        try:
            keys = jobqueue.take_keys(await jobqueue.active_accounts(redis, QUEUES), QUEUES, 0)  # before anyone queued
            waiting = asyncio.create_task(redis.brpop(keys, timeout=5))
            await asyncio.sleep(0.1)
            await asyncio.to_thread(_enqueue, QUEUES[0], 3, "req_new", BOB)
            key, raw = await waiting
            assert (key.decode(), raw) == (QUEUES[0], jobqueue.WAKE)
            keys = jobqueue.take_keys(await jobqueue.active_accounts(redis, QUEUES), QUEUES, 1)
            item = await redis.brpop(keys, timeout=1)
            return jobqueue.decode(item[0].decode(), item[1])
        finally:
            await redis.aclose()

    assert asyncio.run(scenario()).request_id == "req_new"


def test_a_message_that_is_no_job_is_dropped():
    key = jobqueue.priority_keys(QUEUES)[0]
    not_a_job = {"headers": {"task": "celery.backend_cleanup"}, "body": "[]", "properties": {}}

    assert jobqueue.decode(key, json.dumps(not_a_job).encode()) is None
    assert jobqueue.decode(key, b"\xff not json") is None


def test_queue_of_strips_priority_and_account():
    sep = jobqueue.priority_keys(["q"])[1].removeprefix("q")[:-1]
    assert jobqueue.queue_of(f"deployment.x.a42{sep}6") == "deployment.x"
    assert jobqueue.queue_of("deployment.x.a42") == "deployment.x"
    assert jobqueue.queue_of("deployment.x") == "deployment.x"
    assert jobqueue.queue_of("deployment.a.b") == "deployment.a.b"

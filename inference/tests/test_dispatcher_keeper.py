"""A node's presence and its jobs' leases, kept by its dispatcher from the event loop.

Under load the web process's event loop is late and a heartbeat's database write later still: a
live node must keep its jobs (one renewal for all of them, long leases, silence judged only when
the loop was free), and a node that really falls silent must lose them at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis
from channels.layers import get_channel_layer

from deployments.presence import WORKERS_KEY, live_workers
from gpucloud.redis_client import get_redis
from inference import jobqueue, replies
from inference.dispatcher import HandedJob, NodeDispatcher
from nodeprotocol import KIND_GENERATE

JOBS = 200


def _dispatcher() -> NodeDispatcher:
    async def send_to_node(message: dict) -> None:
        pass

    return NodeDispatcher(
        node_name=f"keeper-{uuid.uuid4().hex[:8]}",
        channel_layer=get_channel_layer(),
        session_channel="specific.keeper!session",
        send_to_node=send_to_node,
    )


async def _hand_jobs(dispatcher: NodeDispatcher, count: int) -> list[str]:
    """``count`` jobs handed to the dispatcher's node, each holding its attempt's lease."""
    request_ids = []
    for i in range(count):
        request_id = f"keeper-{uuid.uuid4().hex}"
        await replies.attempt_begin(request_id, 1)
        assert await replies.attempt_claim(request_id, 1)
        queued = jobqueue.QueuedJob("q", request_id, 1, KIND_GENERATE, {}, "specific.view!x", {})
        dispatcher.jobs[f"job-{i}"] = HandedJob(id=f"job-{i}", queued=queued)
        request_ids.append(request_id)
    return request_ids


async def _held(request_ids: list[str]) -> int:
    return sum([await replies.lease_held(request_id, 1) for request_id in request_ids])


def _present(name: str) -> bool:
    return name in live_workers()


def test_all_of_a_nodes_leases_and_its_presence_are_renewed_in_one_round_trip(monkeypatch):
    executed: list[list[str]] = []
    single: list[str] = []
    execute, execute_command = aioredis.client.Pipeline.execute, aioredis.Redis.execute_command

    async def counting_execute(pipe, *args, **kwargs):
        executed.append([str(command[0][0]) for command in pipe.command_stack])
        return await execute(pipe, *args, **kwargs)

    async def counting_command(client, *args, **kwargs):
        single.append(str(args[0]))
        return await execute_command(client, *args, **kwargs)

    async def scenario():
        dispatcher = _dispatcher()
        request_ids = await _hand_jobs(dispatcher, JOBS)
        monkeypatch.setattr(aioredis.client.Pipeline, "execute", counting_execute)
        monkeypatch.setattr(aioredis.Redis, "execute_command", counting_command)
        await dispatcher.renew(heard_at=time.time())
        monkeypatch.undo()
        ttls = [get_redis().pttl(f"gpucloud:lease:{request_id}") for request_id in request_ids]
        return ttls

    ttls = asyncio.run(scenario())

    assert executed == [["ZADD", "EVAL"]]  # one pipeline: the presence and every lease in one script
    assert single == []
    assert min(ttls) > 9_000  # INFERENCE_LEASE_SECONDS (10 s) from now, all of them


def test_a_busy_event_loop_does_not_lapse_the_leases_of_a_live_node():
    """The loop blocked for longer than WORKER_OFFLINE_AFTER (3 s, the old lease): the keeper's
    first tick after it is late and judges nothing; the node's messages that waited are read."""

    async def scenario():
        dispatcher = _dispatcher()
        dispatcher.start()
        try:
            request_ids = await _hand_jobs(dispatcher, 20)
            await asyncio.sleep(1.2)  # a renewal on time
            time.sleep(4)  # noqa: ASYNC251 (the loop is busy with other streams; the node keeps talking)
            await asyncio.sleep(0)  # the keeper's late tick comes first
            dispatcher.heard()  # then the node's heartbeat that waited in line
            await asyncio.sleep(1.5)
            return await _held(request_ids), _present(dispatcher.node_name)
        finally:
            await dispatcher.close()
            await dispatcher.stop()

    held, present = asyncio.run(scenario())

    assert held == 20
    assert present


def test_a_node_silent_while_the_loop_is_free_loses_its_leases_and_presence_at_once(settings):
    settings.WORKER_OFFLINE_AFTER = 1.0

    async def scenario():
        dispatcher = _dispatcher()
        dispatcher.start()
        try:
            request_ids = await _hand_jobs(dispatcher, 20)
            await asyncio.sleep(0.5)
            assert await _held(request_ids) == 20 and _present(dispatcher.node_name)
            await asyncio.sleep(2.2)  # silent for longer than WORKER_OFFLINE_AFTER, the loop free
            silent = await _held(request_ids), _present(dispatcher.node_name)
            dispatcher.heard()  # it wakes up: present again at once
            await asyncio.sleep(0.2)
            return silent, _present(dispatcher.node_name)
        finally:
            await dispatcher.close()
            await dispatcher.stop()

    (held_when_silent, present_when_silent), present_again = asyncio.run(scenario())

    # Dropped, not left to lapse: the leases would have lasted INFERENCE_LEASE_SECONDS (10 s).
    assert held_when_silent == 0
    assert not present_when_silent
    assert present_again


@pytest.fixture(autouse=True)
def _forget_keeper_nodes():
    yield
    redis = get_redis()
    names = [name for name in redis.zrange(WORKERS_KEY, 0, -1) if name.startswith(b"keeper-")]
    if names:
        redis.zrem(WORKERS_KEY, *names)

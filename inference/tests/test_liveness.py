"""A web process's promises to Redis (its key, its nodes' presence, their jobs' leases), kept by
its liveness thread.

Under load the web process's event loop is late, and a round trip made from it later still: a
live node must keep its jobs and its replicas however busy the loop (one renewal for all of them,
from a thread; silence judged only while the loop is on time), and a node that really falls silent
must lose them at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from channels.layers import get_channel_layer

from deployments.presence import WORKERS_KEY, live_workers
from gpucloud.redis_client import get_redis
from inference import jobqueue, journal, liveness, replies
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


def _held(request_ids: list[str]) -> int:
    """How many of the attempts (1) still hold their lease (read without the event loop)."""
    return sum(get_redis().get(f"gpucloud:lease:{request_id}") == b"1" for request_id in request_ids)


def _present(name: str) -> bool:
    return name in live_workers()


def _process_alive() -> bool:
    return get_redis().exists(f"gpucloud:web:{journal.this_process()}") == 1


def test_one_tick_renews_the_process_key_and_every_nodes_presence_and_leases_in_one_round_trip(monkeypatch):
    executed: list[list[str]] = []
    execute = redis.client.Pipeline.execute

    def counting_execute(pipe, *args, **kwargs):
        executed.append([str(command[0][0]) for command in pipe.command_stack])
        return execute(pipe, *args, **kwargs)

    async def scenario():
        dispatcher = _dispatcher()
        request_ids = await _hand_jobs(dispatcher, JOBS)
        thread = liveness.Liveness(asyncio.get_running_loop())  # not started: one tick, by hand
        thread.process = journal.this_process()
        thread.add(dispatcher)
        monkeypatch.setattr(redis.client.Pipeline, "execute", counting_execute)
        thread.tick()
        monkeypatch.undo()
        return [get_redis().pttl(f"gpucloud:lease:{request_id}") for request_id in request_ids], dispatcher

    ttls, dispatcher = asyncio.run(scenario())

    # One pipeline: the process's key (SET, HSET), the node's presence and every lease in one script.
    assert executed == [["SET", "HSET", "ZADD", "EVAL"]]
    assert min(ttls) > 9_000  # INFERENCE_LEASE_SECONDS (10 s) from now, all of them
    assert _present(dispatcher.node_name)
    assert _process_alive()


def test_a_busy_event_loop_lapses_neither_the_nodes_presence_nor_its_leases_nor_the_process_key():
    """The loop blocked for longer than WORKER_OFFLINE_AFTER (3 s) and the process key's time to
    live (5 s): the thread renews everything meanwhile, taking the node for alive (a loop that
    late is late to read it); what is checked is checked before the loop runs again."""

    async def scenario():
        dispatcher = _dispatcher()
        dispatcher.start()
        try:
            await journal.ensure_kept_alive()
            request_ids = await _hand_jobs(dispatcher, 20)
            await asyncio.sleep(1.2)
            time.sleep(6)  # noqa: ASYNC251 (the loop is busy with other streams; the node keeps talking)
            during = _held(request_ids), _present(dispatcher.node_name), _process_alive()
            dispatcher.heard()  # the node's heartbeat that waited in line
            await asyncio.sleep(1.5)
            return during, (_held(request_ids), _present(dispatcher.node_name))
        finally:
            await dispatcher.close()
            await dispatcher.stop()

    during, after = asyncio.run(scenario())

    assert during == (20, True, True)
    assert after == (20, True)


def test_a_node_silent_while_the_loop_is_free_loses_its_leases_and_presence_at_once(settings):
    settings.WORKER_OFFLINE_AFTER = 1.0

    async def scenario():
        dispatcher = _dispatcher()
        dispatcher.start()
        try:
            request_ids = await _hand_jobs(dispatcher, 20)
            await asyncio.sleep(0.5)
            assert _held(request_ids) == 20 and _present(dispatcher.node_name)
            await asyncio.sleep(2.2)  # silent for longer than WORKER_OFFLINE_AFTER, the loop free
            silent = _held(request_ids), _present(dispatcher.node_name)
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


def test_a_node_silent_for_long_is_gone_however_late_the_loop(settings, monkeypatch):
    settings.WORKER_OFFLINE_AFTER = 1.0
    monkeypatch.setattr(liveness, "SILENT_ANYWAY_SECONDS", 2.0)

    async def scenario():
        dispatcher = _dispatcher()
        dispatcher.start()
        try:
            request_ids = await _hand_jobs(dispatcher, 5)
            await asyncio.sleep(0.5)
            time.sleep(3.5)  # noqa: ASYNC251 (the loop never on time again, the node silent)
            return _held(request_ids), _present(dispatcher.node_name)
        finally:
            await dispatcher.close()
            await dispatcher.stop()

    assert asyncio.run(scenario()) == (0, False)


@pytest.fixture(autouse=True)
def _forget_keeper_nodes():
    yield
    redis_client = get_redis()
    names = [name for name in redis_client.zrange(WORKERS_KEY, 0, -1) if name.startswith(b"keeper-")]
    if names:
        redis_client.zrem(WORKERS_KEY, *names)

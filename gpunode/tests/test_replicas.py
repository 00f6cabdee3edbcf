"""gpunode.replicas and gpunode.jobs: loading a node's replicas, and who is to blame when a request fails."""

from __future__ import annotations

import asyncio

import pytest

from gpunode import replicas as replicas_module
from gpunode.engines import EngineUnavailable
from gpunode.jobs import run_job
from gpunode.replicas import Replicas
from nodeprotocol import GenerationJob

SPEC = {"id": 7, "deployment": "d", "queue": "deployment.d", "engine": "simulated", "engine_config": {}}


@pytest.fixture(autouse=True)
def quick_rechecks(monkeypatch):
    monkeypatch.setattr(replicas_module, "RECHECK_SECONDS", 0.05)


async def until(condition) -> None:
    for _ in range(500):  # 5 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_an_assigned_replica_loads_and_an_unassigned_one_is_forgotten():
    async def scenario():
        replicas = Replicas()
        replicas.assign([SPEC])
        assert replicas.states["7"]["state"] == "starting"
        assert replicas.engine("7") is None
        await until(lambda: replicas.states["7"]["state"] == "running")
        assert replicas.engine("7") is not None
        replicas.assign([])
        assert replicas.states == {} and replicas.engine("7") is None

    asyncio.run(scenario())


class FlakyEngine:
    """An engine whose requests fail; its health check passes until ``broken`` is set."""

    deterministic = False

    def __init__(self) -> None:
        self.broken = False

    async def prepare(self) -> None:
        if self.broken:
            raise EngineUnavailable("the upstream is down")

    async def generate(self, job):
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        yield  # an async generator


@pytest.fixture
def flaky(monkeypatch):
    engine = FlakyEngine()
    monkeypatch.setattr(replicas_module, "get_engine", lambda name, config: engine)
    return engine


def _run(replicas: Replicas) -> dict:
    sent = []

    async def send(message):
        sent.append(message)

    spec = GenerationJob(
        request_id="req_x", model="m", parameters_billion=1, gpu_profile="", prompt="p", prompt_tokens=1, max_tokens=5
    )
    message = {"type": "job", "job": "j", "kind": "generate", "replica": 7, "spec": spec.to_wire()}
    return sent, run_job(message, replicas, send)


def test_a_failure_caused_by_the_request_is_its_400_and_no_strike(flaky):
    async def scenario():
        replicas = Replicas()
        replicas.assign([SPEC])
        await until(lambda: replicas.states["7"]["state"] == "running")
        for _ in range(5):  # no number of such requests takes the replica down
            sent, job = _run(replicas)
            await job
            [error] = sent
            assert (error["status"], error["code"], error["engine_fault"]) == (400, "engine_rejected_input", False)
        assert replicas.states["7"]["state"] == "running"

    asyncio.run(scenario())


def test_a_failure_with_a_failing_health_check_marks_the_replica_failed_until_it_loads_again(flaky):
    async def scenario():
        replicas = Replicas()
        replicas.assign([SPEC])
        await until(lambda: replicas.states["7"]["state"] == "running")
        flaky.broken = True
        sent, job = _run(replicas)
        await job
        [error] = sent
        assert (error["status"], error["code"], error["engine_fault"]) == (502, "engine_error", True)
        assert replicas.states["7"]["state"] == "failed"
        assert "UnicodeEncodeError" in replicas.states["7"]["reason"]
        flaky.broken = False  # the recheck loads it again
        await until(lambda: replicas.states["7"]["state"] == "running")

    asyncio.run(scenario())


def test_a_replica_that_fails_to_load_is_checked_again(monkeypatch):
    loads = []
    real_load = Replicas._load

    async def counting_load(self, key, spec, delay=0.0):
        loads.append(key)
        await real_load(self, key, spec, delay)

    monkeypatch.setattr(Replicas, "_load", counting_load)

    async def scenario():
        replicas = Replicas()
        replicas.assign([{**SPEC, "engine": "no-such-engine"}])
        await until(lambda: replicas.states["7"]["state"] == "failed")
        assert "no engine named 'no-such-engine'" in replicas.states["7"]["reason"]
        await until(lambda: len(loads) >= 3)  # checked again, and again
        replicas.assign([])  # unassigned: the rechecks stop
        count = len(loads)
        await asyncio.sleep(0.2)
        assert len(loads) == count

    asyncio.run(scenario())

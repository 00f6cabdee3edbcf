"""Engine failures feed the health of the replica that served them (inference.worker)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import wait_for
from inference import worker

SPEC = {"id": 7, "deployment": "d", "queue": "deployment.d", "engine": "simulated", "engine_config": {}}


@pytest.fixture
def agent(monkeypatch):
    agent = SimpleNamespace(assignment=[SPEC], replica_states={"7": {"state": "running", "reason": ""}})
    monkeypatch.setattr(worker, "_agent", agent)
    monkeypatch.setattr(worker, "RECHECK_SECONDS", 0.2)
    worker._failures.clear()
    return agent


def test_consecutive_engine_failures_mark_the_replica_failed_until_it_loads_again(agent):
    worker.record_engine_outcome("deployment.d", "upstream down")
    worker.record_engine_outcome("deployment.d", "upstream down")
    assert agent.replica_states["7"]["state"] == "running"

    worker.record_engine_outcome("deployment.d", "upstream down")
    assert agent.replica_states["7"]["state"] == "failed"
    assert "3 requests in a row failed in the engine: upstream down" in agent.replica_states["7"]["reason"]
    # The recheck loads it again (the simulated engine always can).
    wait_for(lambda: agent.replica_states["7"]["state"] == "running", timeout=5, message="the recheck")


def test_a_success_resets_the_count(agent):
    for outcome in ("down", "down", None, "down", "down"):
        worker.record_engine_outcome("deployment.d", outcome)
    assert agent.replica_states["7"]["state"] == "running"


def test_other_queues_are_ignored(agent):
    for _ in range(5):
        worker.record_engine_outcome("deployment.other", "down")
    assert agent.replica_states["7"]["state"] == "running"


def test_a_replica_that_fails_to_load_is_checked_again(agent, monkeypatch):
    calls = []
    real_load = worker.load_replica
    monkeypatch.setattr(worker, "load_replica", lambda spec: calls.append(spec) or real_load(spec))
    broken = {**SPEC, "engine": "no-such-engine"}
    agent.assignment = [broken]
    real_load(broken)
    assert agent.replica_states["7"]["state"] == "failed"
    assert "no engine named 'no-such-engine'" in agent.replica_states["7"]["reason"]
    wait_for(lambda: calls, timeout=5, message="a recheck")
    agent.assignment = []  # unassigned: the rechecks stop

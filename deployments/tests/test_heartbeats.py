"""Heartbeats over /ws/workers/: telemetry, offline within 5 seconds, online again on return."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from conftest import wait_for
from deployments.models import WorkerNode

pytestmark = pytest.mark.live


def _status(live, name: str) -> str:
    node = WorkerNode.objects.get(name=name)
    return node.effective_status


def _api_workers(live, key: str) -> dict:
    response = httpx.get(f"{live.url}/api/workers", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert response.status_code == 200
    return {w["name"]: w for w in response.json()["data"]}


def test_heartbeats_carry_gpu_telemetry(fleet, make_key):
    _, key = make_key(fleet.user)
    fleet.start_worker("telemetry", "--gpus=A100-80GB,A100-80GB", "--slots=4")
    node = fleet.wait_serving("telemetry")

    first = node.last_heartbeat_at
    wait_for(lambda: WorkerNode.objects.get(pk=node.pk).last_heartbeat_at > first, timeout=3, message="a heartbeat")
    summary = _api_workers(fleet, key)[node.name]

    assert summary["status"] == "online"
    assert summary["slots"] == 4 and summary["in_flight"] == 0
    assert summary["queues"] and all(q.startswith("deployment.") for q in summary["queues"])
    assert len(summary["gpus"]) == 2
    # A simulated GPU's memory used is what the replicas placed on it hold (gpunode.replicas).
    placed = {0: 0.0, 1: 0.0}
    for replica in summary["replicas"]:
        for index in replica["gpus"]:
            placed[index] += replica["memory_gb"] * 1024 / len(replica["gpus"])
    assert sum(placed.values()) > 0
    for gpu in summary["gpus"]:
        assert 0 <= gpu["utilization"] <= 100
        assert gpu["memory_used_mb"] == round(placed[gpu["index"]]) <= gpu["memory_total_mb"] == 81920
        assert 20 < gpu["temperature_c"] < 100


def test_a_killed_worker_is_offline_within_five_seconds(fleet):
    worker = fleet.start_worker("doomed")
    node = fleet.wait_serving("doomed")

    killed_at = time.monotonic()
    worker.send_signal(signal.SIGKILL)
    wait_for(lambda: _status(fleet, node.name) == "offline", timeout=5, interval=0.05, message="offline")

    assert time.monotonic() - killed_at < 5


def test_a_silent_worker_is_offline_within_five_seconds_and_online_when_it_returns(fleet):
    """SIGSTOP freezes the process with its connection open, as a network cut would."""
    worker = fleet.start_worker("frozen")
    node = fleet.wait_serving("frozen")

    frozen_at = time.monotonic()
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _status(fleet, node.name) == "offline", timeout=5, interval=0.05, message="offline")
        assert time.monotonic() - frozen_at < 5
        health = httpx.get(f"{fleet.url}/health", timeout=5)
        assert health.status_code == 503
    finally:
        os.kill(worker.pid, signal.SIGCONT)

    wait_for(lambda: _status(fleet, node.name) == "online", timeout=5, interval=0.05, message="online again")
    assert httpx.get(f"{fleet.url}/health", timeout=5).status_code == 200

"""A real GPU node process (simulated A100) reports as used the GPU memory its loaded replicas
hold, as placed by the platform: the demo's three replicas (17.5 + 16 + 42 GB) show as 75.5 of 80 GB,
not an invented figure."""

from __future__ import annotations

import pytest

from conftest import wait_for
from deployments.models import Replica

pytestmark = pytest.mark.live


def _placed_mb(node) -> dict[int, int]:
    placed: dict[int, float] = {}
    for replica in Replica.objects.filter(node=node, state=Replica.State.RUNNING):
        for index in replica.gpu_indices:
            placed[index] = placed.get(index, 0) + replica.memory_gb * 1024 / len(replica.gpu_indices)
    return {index: round(mb) for index, mb in placed.items()}


def test_a_simulated_node_reports_the_memory_its_replicas_hold(live):
    node = live.wait_serving("main")
    placed = _placed_mb(node)
    assert placed, "the demo's replicas are placed on the node's GPU"

    def reported():
        node.refresh_from_db()
        gpus = {gpu["index"]: gpu["memory_used_mb"] for gpu in node.telemetry.get("gpus", [])}
        return gpus if all(gpus.get(index) == mb for index, mb in placed.items()) else None

    gpus = wait_for(reported, timeout=10, message=f"the node to report {placed} MB used")
    assert sum(gpus.values()) == sum(placed.values())
    assert sum(r.memory_gb for r in Replica.objects.filter(node=node)) == pytest.approx(
        sum(placed.values()) / 1024, abs=0.01
    )

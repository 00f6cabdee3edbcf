"""What a node reports of its GPUs' memory: a simulated GPU holds exactly what the replicas loaded
on it hold (as placed by the platform), so the Fleet page agrees with placement."""

from __future__ import annotations

import asyncio

from gpunode.agent import NodeAgent
from gpunode.replicas import Replicas
from gpunode.telemetry import GpuTelemetry

GB = 1024


def _spec(replica_id: int, memory_gb, gpus, engine: str = "simulated") -> dict:
    return {
        "id": replica_id,
        "deployment": f"d{replica_id}",
        "queue": f"deployment.d{replica_id}",
        "engine": engine,
        "engine_config": {},
        "gpus": gpus,
        "memory_gb": memory_gb,
    }


async def _loaded(replicas: Replicas) -> None:
    for _ in range(500):
        if all(state["state"] != "starting" for state in replicas.states.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("replicas did not load")


def test_the_memory_held_is_that_of_the_loaded_replicas_split_over_their_gpus():
    async def scenario():
        replicas = Replicas()
        replicas.assign(
            [
                _spec(1, 17.5, [0]),
                _spec(2, 16.0, [0]),
                _spec(3, 42.0, [0, 1]),  # across two GPUs: half on each, as placement counts it
                _spec(4, 30.0, [1], engine="no-such-engine"),  # failed to load: holds nothing
                _spec(5, True, [1]),  # nonsense figures are ignored
                _spec(6, 8.0, ["1"]),
            ]
        )
        assert replicas.memory_held_mb() == {}  # nothing loaded yet
        await _loaded(replicas)
        held = replicas.memory_held_mb()
        assert held == {0: (17.5 + 16.0 + 21.0) * GB, 1: 21.0 * GB}
        replicas.assign([_spec(1, 17.5, [0])])
        assert replicas.memory_held_mb() == {0: 17.5 * GB}

    asyncio.run(scenario())


def test_a_simulated_gpu_reports_the_memory_held_on_it():
    telemetry = GpuTelemetry(["A100-80GB", "A100-80GB"])
    if telemetry.nvml is not None:  # a machine with real GPUs reports real figures
        return

    idle = telemetry.sample(0, 8, {0: 75.5 * GB})
    busy = telemetry.sample(8, 8, {0: 75.5 * GB})
    overfull = telemetry.sample(0, 8, {1: 200 * GB})

    assert [gpu["memory_used_mb"] for gpu in idle] == [round(75.5 * GB), 0]
    assert [gpu["memory_used_mb"] for gpu in busy] == [round(75.5 * GB), 0]  # weights and KV cache are held
    assert overfull[1]["memory_used_mb"] == overfull[1]["memory_total_mb"] == 80 * GB
    assert busy[0]["utilization"] > idle[0]["utilization"]


def test_the_heartbeat_carries_the_memory_of_the_loaded_replicas():
    async def scenario():
        agent = NodeAgent(server="http://127.0.0.1:1", credential="x", slots=4, telemetry=GpuTelemetry(["A100-80GB"]))
        if agent.telemetry.nvml is not None:
            return
        agent.replicas.assign([_spec(1, 17.5, [0]), _spec(2, 58.0, [0])])
        await _loaded(agent.replicas)
        gpus = agent.heartbeat()["gpus"]
        assert gpus[0]["memory_used_mb"] == round(75.5 * GB)
        assert gpus[0]["memory_total_mb"] == 80 * GB

    asyncio.run(scenario())

"""The replicas the platform placed on this node: their engines, their states, their health.

The platform sends the node's whole assignment (``assign``); each new replica's engine is
prepared in the background (a model loaded, an upstream checked) and reported ``running`` or
``failed`` (with the reason) in the next heartbeats. When a request fails in the engine, the
engine's own check (``prepare()`` again, bounded by ``HEALTH_CHECK_SECONDS``) decides whose fault
it was: if the engine is fine, the request's content was the cause and the replica keeps serving;
if not, the replica is reported failed and prepared again every ``RECHECK_SECONDS`` until it
loads. So no sequence of requests can take a model down for everyone.
"""

from __future__ import annotations

import asyncio
import logging

from gpunode.engines import Engine, EngineUnavailable, UnknownEngine, get_engine

logger = logging.getLogger(__name__)

RECHECK_SECONDS = 10.0
HEALTH_CHECK_SECONDS = 10.0


class Replicas:
    def __init__(self) -> None:
        self.specs: dict[str, dict] = {}
        # replica id -> {"state": starting|running|failed, "reason": str}
        self.states: dict[str, dict] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    def assign(self, specs: list[dict]) -> None:
        """Follow the platform's assignment: load new replicas, forget removed ones."""
        assigned = {str(spec["id"]): spec for spec in specs}
        for key in list(self.specs):
            if key not in assigned:
                self.specs.pop(key)
                self.states.pop(key, None)
                task = self._tasks.pop(key, None)
                if task is not None:
                    task.cancel()
        for key, spec in assigned.items():
            if key not in self.specs:
                self.specs[key] = spec
                self.states[key] = {"state": "starting", "reason": ""}
                self._tasks[key] = asyncio.create_task(self._load(key, spec), name=f"load-{key}")

    def memory_held_mb(self) -> dict[int, float]:
        """GPU memory (MB) the loaded replicas hold, per GPU index: each running replica's placed
        ``memory_gb`` (weights and working KV cache, as the catalog counts them), split evenly over
        its GPUs the way the platform's placement counts it. What a simulated GPU reports as used."""
        held: dict[int, float] = {}
        for key, spec in self.specs.items():
            if self.states.get(key, {}).get("state") != "running":
                continue
            memory_gb = spec.get("memory_gb")
            gpus = [index for index in spec.get("gpus") or [] if isinstance(index, int) and not isinstance(index, bool)]
            if not gpus or isinstance(memory_gb, bool) or not isinstance(memory_gb, int | float) or memory_gb <= 0:
                continue
            for index in gpus:
                held[index] = held.get(index, 0.0) + memory_gb * 1024 / len(gpus)
        return held

    def engine(self, replica_id: str) -> Engine | None:
        """The loaded engine of a replica that is serving, else None."""
        spec = self.specs.get(replica_id)
        if spec is None or self.states.get(replica_id, {}).get("state") != "running":
            return None
        return get_engine(spec["engine"], spec["engine_config"])

    async def _load(self, key: str, spec: dict, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            engine = get_engine(spec["engine"], spec["engine_config"])
            await engine.prepare()
        except asyncio.CancelledError:
            raise
        except (UnknownEngine, EngineUnavailable) as error:
            self._failed(key, spec, str(error), recheck=True)
        except Exception as error:
            logger.exception("Replica %s of %s failed to load", key, spec["deployment"])
            self._failed(key, spec, f"{type(error).__name__}: {error}", recheck=False)
        else:
            if key in self.specs:
                logger.info("Replica %s of %s loaded", key, spec["deployment"])
                self.states[key] = {"state": "running", "reason": ""}

    def _failed(self, key: str, spec: dict, reason: str, *, recheck: bool) -> None:
        if key not in self.specs:
            return
        logger.error("Replica %s of %s failed: %s", key, spec["deployment"], reason)
        self.states[key] = {"state": "failed", "reason": reason[:300]}
        if recheck:  # an upstream that comes back, a model that fits after all
            self._tasks[key] = asyncio.create_task(self._load(key, spec, RECHECK_SECONDS), name=f"recheck-{key}")

    async def healthy(self, replica_id: str) -> bool:
        """Whether a replica's engine passes its check now (``prepare()``, within HEALTH_CHECK_SECONDS)."""
        spec = self.specs.get(replica_id)
        if spec is None:
            return True  # no longer ours: nothing to mark
        try:
            engine = get_engine(spec["engine"], spec["engine_config"])
            await asyncio.wait_for(engine.prepare(), HEALTH_CHECK_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("Replica %s of %s failed its health check: %s", replica_id, spec["deployment"], error)
            return False
        return True

    def mark_failed(self, replica_id: str, failure: str) -> None:
        """The engine failed a request and its health check: stop serving until it loads again."""
        if replica_id in self.specs and self.states[replica_id]["state"] == "running":
            self._failed(replica_id, self.specs[replica_id], f"the engine failed: {failure}", recheck=True)

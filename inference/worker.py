"""The GPU worker process: a Celery worker that serves the replicas the server places on it.

The :class:`~deployments.agent.FleetAgent` receives the node's assignment (its replicas) over the
fleet WebSocket. :class:`FleetStep`, a Celery consumer bootstep, loads each new replica's engine
in the background (``engine.prepare()``: a model loaded, an upstream checked), reports it
``running`` or ``failed`` in the heartbeats, and consumes exactly the queues of the loaded
replicas: a node starts and stops serving deployments without a restart. Celery's signals keep
the agent's count of requests in flight, and mark the node draining on a warm shutdown (SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from celery import bootsteps, signals

from deployments.agent import FleetAgent
from inference.engines import UnknownEngine, get_engine
from inference.engines.base import EngineUnavailable

logger = logging.getLogger(__name__)

# Always consumed, so a worker has a queue before its first assignment arrives.
CONTROL_QUEUE = "gpucloud.control"
SYNC_INTERVAL = 0.25

_agent: FleetAgent | None = None
_node_name = ""


def node_name() -> str:
    """This worker's node name: the name its heartbeats and its usage records carry."""
    return _node_name


def attach_agent(agent: FleetAgent, name: str) -> None:
    """Connect the agent to this process's Celery worker (call before ``worker_main``)."""
    global _agent, _node_name
    _agent, _node_name = agent, name
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_finished, weak=False)
    signals.worker_shutting_down.connect(_shutting_down, weak=False)
    signals.worker_shutdown.connect(_shutdown, weak=False)


def _task_started(**kwargs) -> None:
    _agent.task_started()


def _task_finished(**kwargs) -> None:
    _agent.task_finished()


def _shutting_down(**kwargs) -> None:
    logger.info("Draining: finishing the requests in flight, taking no new ones")
    _agent.draining = True


def _shutdown(**kwargs) -> None:
    _agent.leave()


# A replica whose engine fails this many requests in a row is reported failed (so the server
# stops routing to it), and is checked again every RECHECK_SECONDS until it loads.
UNHEALTHY_AFTER = 3
RECHECK_SECONDS = 10.0
_failures: dict[str, int] = {}
_health_lock = threading.Lock()


def record_engine_outcome(queue: str, failure: str | None) -> None:
    """Feed the health of the replica serving ``queue`` with a request's outcome."""
    if _agent is None or not queue:
        return
    spec = next((s for s in _agent.assignment or [] if s["queue"] == queue), None)
    if spec is None:
        return
    key = str(spec["id"])
    with _health_lock:
        if failure is None:
            _failures[key] = 0
            return
        _failures[key] = _failures.get(key, 0) + 1
        if _failures[key] < UNHEALTHY_AFTER or _agent.replica_states.get(key, {}).get("state") != "running":
            return
        reason = f"{_failures[key]} requests in a row failed in the engine: {failure}"
        _agent.replica_states[key] = {"state": "failed", "reason": reason[:300]}
        _failures[key] = 0
    logger.error("Replica %s of %s marked failed: %s", key, spec["deployment"], reason)
    recheck = threading.Timer(RECHECK_SECONDS, load_replica, (spec,))
    recheck.daemon = True
    recheck.start()


def load_replica(spec: dict) -> None:
    """Prepare a replica's engine (in a thread of its own) and record the outcome."""
    if _agent is None:
        return
    states = _agent.replica_states
    try:
        engine = get_engine(spec["engine"], spec["engine_config"])
        asyncio.run(engine.prepare())
    except (UnknownEngine, EngineUnavailable) as error:
        logger.error("Replica %s of %s failed to load: %s", spec["id"], spec["deployment"], error)
        states[str(spec["id"])] = {"state": "failed", "reason": str(error)}
        if str(spec["id"]) in {str(s["id"]) for s in _agent.assignment or []}:
            # Keep checking: an upstream that comes back, or a model that fits after all.
            recheck = threading.Timer(RECHECK_SECONDS, load_replica, (spec,))
            recheck.daemon = True
            recheck.start()
    except Exception as error:
        logger.exception("Replica %s of %s failed to load", spec["id"], spec["deployment"])
        states[str(spec["id"])] = {"state": "failed", "reason": f"{type(error).__name__}: {error}"}
    else:
        logger.info("Replica %s of %s loaded", spec["id"], spec["deployment"])
        states[str(spec["id"])] = {"state": "running", "reason": ""}


class FleetStep(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_ref = None

    def start(self, consumer) -> None:
        self.consumer = consumer
        self.timer_ref = consumer.timer.call_repeatedly(SYNC_INTERVAL, self.sync)

    def stop(self, consumer) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def sync(self) -> None:
        assignment = _agent.assignment
        states = _agent.replica_states
        if assignment is not None:
            assigned = {str(spec["id"]): spec for spec in assignment}
            for key in list(states):
                if key not in assigned:
                    del states[key]
            for key, spec in assigned.items():
                if key not in states:
                    states[key] = {"state": "starting", "reason": ""}
                    threading.Thread(target=load_replica, args=(spec,), name=f"load-{key}", daemon=True).start()
        consumed = {queue.name for queue in self.consumer.task_consumer.queues}
        if assignment is not None and not _agent.draining:
            loaded = {spec["queue"] for spec in assignment if states.get(str(spec["id"]), {}).get("state") == "running"}
            wanted = loaded | {CONTROL_QUEUE}
            for name in sorted(wanted - consumed):
                logger.info("Consuming %s", name)
                self.consumer.add_task_queue(name)
            for name in sorted(consumed - wanted):
                logger.info("No longer consuming %s", name)
                self.consumer.cancel_task_queue(name)
            consumed = wanted
        _agent.consumed_queues = sorted(consumed - {CONTROL_QUEUE})

"""The GPU worker process: a Celery worker whose queues the server assigns over the fleet WebSocket.

:class:`FleetStep` is a Celery consumer bootstep: a few times a second it brings the consumed
queues in line with the assignment the :class:`~deployments.agent.FleetAgent` last received, so a
node starts and stops serving deployments without a restart. Celery's signals keep the agent's
count of requests in flight, and mark the node draining on a warm shutdown (SIGTERM).
"""

from __future__ import annotations

import logging

from celery import bootsteps, signals

from deployments.agent import FleetAgent

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


class FleetStep(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_ref = None

    def start(self, consumer) -> None:
        self.consumer = consumer
        self.timer_ref = consumer.timer.call_repeatedly(SYNC_INTERVAL, self.sync_queues)

    def stop(self, consumer) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def sync_queues(self) -> None:
        consumed = {queue.name for queue in self.consumer.task_consumer.queues}
        desired = _agent.desired_queues
        if desired is not None and not _agent.draining:
            wanted = set(desired) | {CONTROL_QUEUE}
            for name in sorted(wanted - consumed):
                logger.info("Consuming %s", name)
                self.consumer.add_task_queue(name)
            for name in sorted(consumed - wanted):
                logger.info("No longer consuming %s", name)
                self.consumer.cancel_task_queue(name)
            consumed = wanted
        _agent.consumed_queues = sorted(consumed - {CONTROL_QUEUE})

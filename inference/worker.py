"""The GPU worker process: a Celery worker that consumes the queues of running deployments.

:class:`FleetStep` is a Celery consumer bootstep. Every presence interval it announces the worker
in Redis (for ``/health``) and brings the set of consumed queues in line with the running
deployments, so a new deployment is served without restarting any worker.
"""

from __future__ import annotations

import logging
import os
import socket

from celery import bootsteps
from django.conf import settings
from django.db import close_old_connections

from deployments.presence import worker_gone, worker_seen
from deployments.selectors import running_queue_names

logger = logging.getLogger(__name__)

# Always consumed, so a worker has a queue even before any deployment runs.
CONTROL_QUEUE = "gpucloud.control"


def default_worker_name() -> str:
    return f"gpuworker-{os.getpid()}@{socket.gethostname()}"


class FleetStep(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_ref = None

    def start(self, consumer) -> None:
        self.consumer = consumer
        self.tick()
        self.timer_ref = consumer.timer.call_repeatedly(settings.WORKER_PRESENCE_INTERVAL, self.tick)

    def stop(self, consumer) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None
        worker_gone(consumer.hostname)

    def consumed_queues(self) -> set[str]:
        return {queue.name for queue in self.consumer.task_consumer.queues}

    def tick(self) -> None:
        try:
            self.sync_queues()
            worker_seen(self.consumer.hostname, {"queues": sorted(self.consumed_queues()), "pid": os.getpid()})
        except Exception:  # a passing database or Redis error must not stop the worker
            logger.exception("Fleet update failed; retrying in %ss", settings.WORKER_PRESENCE_INTERVAL)

    def sync_queues(self) -> None:
        close_old_connections()
        wanted = set(running_queue_names()) | {CONTROL_QUEUE}
        consumed = self.consumed_queues()
        for name in sorted(wanted - consumed):
            logger.info("Consuming %s", name)
            self.consumer.add_task_queue(name)
        for name in sorted(consumed - wanted):
            logger.info("No longer consuming %s", name)
            self.consumer.cancel_task_queue(name)

"""Gauges of shared state, computed at scrape time from the database and Redis.

Requests waiting per deployment live in the job queues (Redis) and the nodes' GPU figures in
their last heartbeat (``WorkerNode.telemetry``): reading them when Prometheus scrapes gives the
same answer from every web process, where per-process gauges would each know only their own part.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from deployments.models import Deployment, WorkerNode
from deployments.selectors import queue_depth
from observability.metrics import PREFIX

logger = logging.getLogger(__name__)

MB = 1024 * 1024


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class FleetCollector:
    """``num_requests_waiting`` per deployment; per node ``node_up``, requests running, and each
    GPU's utilisation, memory and temperature (for nodes that are up: an offline node's last
    figures are stale)."""

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._nodes()

    def _queues(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            PREFIX + "num_requests_waiting",
            "Requests waiting in a deployment's queue for a GPU node.",
            labels=("deployment", "model_name"),
        )
        deployments = Deployment.objects.exclude(status=Deployment.Status.STOPPED).select_related("model")
        try:
            for deployment in deployments.order_by("name"):
                waiting.add_metric([deployment.name, deployment.model.model_id], queue_depth(deployment.queue_name))
        except RedisError as error:  # the rest of the scrape still answers
            logger.warning("Metrics: could not read the queues: %s", error)
            return
        yield waiting

    def _nodes(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            PREFIX + "node_up", "1 when the GPU node is online or draining, else 0.", labels=["node"]
        )
        running = GaugeMetricFamily(
            PREFIX + "node_requests_running", "Requests the GPU node is running now.", labels=["node"]
        )
        gpu_labels = ["node", "gpu", "gpu_name"]
        utilization = GaugeMetricFamily(
            PREFIX + "node_gpu_utilization_ratio",
            "GPU utilisation, 0 to 1, from the last heartbeat.",
            labels=gpu_labels,
        )
        memory_used = GaugeMetricFamily(
            PREFIX + "node_gpu_memory_used_bytes", "GPU memory in use, from the last heartbeat.", labels=gpu_labels
        )
        memory_total = GaugeMetricFamily(
            PREFIX + "node_gpu_memory_total_bytes", "GPU memory in all, from the last heartbeat.", labels=gpu_labels
        )
        temperature = GaugeMetricFamily(
            PREFIX + "node_gpu_temperature_celsius", "GPU temperature, from the last heartbeat.", labels=gpu_labels
        )
        nodes = WorkerNode.objects.exclude(status=WorkerNode.Status.LEFT).filter(credential_revoked_at__isnull=True)
        for node in nodes.order_by("name", "id"):
            is_up = node.effective_status in (WorkerNode.Status.ONLINE, WorkerNode.Status.DRAINING)
            up.add_metric([node.name], 1.0 if is_up else 0.0)
            if not is_up:
                continue
            telemetry = node.telemetry or {}
            running.add_metric([node.name], _number(telemetry.get("in_flight")) or 0.0)
            for gpu in telemetry.get("gpus") or []:
                labels = [node.name, str(gpu.get("index", "")), str(gpu.get("name", ""))]
                for family, field, scale in (
                    (utilization, "utilization", 0.01),
                    (memory_used, "memory_used_mb", MB),
                    (memory_total, "memory_total_mb", MB),
                    (temperature, "temperature_c", 1),
                ):
                    value = _number(gpu.get(field))
                    if value is not None:
                        family.add_metric(labels, value * scale)
        yield from (up, running, utilization, memory_used, memory_total, temperature)

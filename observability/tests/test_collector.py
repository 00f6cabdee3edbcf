"""Scrape-time gauges: requests waiting per deployment (the job queues) and each node's GPUs
(its last heartbeat), the same from every web process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deployments.models import Deployment, WorkerNode
from inference import jobqueue
from nodeprotocol import KIND_GENERATE
from observability.collector import FleetCollector

pytestmark = pytest.mark.django_db


def _samples() -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _node(name: str, *, status=WorkerNode.Status.ONLINE, seen_ago: float = 0, **fields) -> WorkerNode:
    return WorkerNode.objects.create(
        name=name,
        credential_prefix=name[:16],
        hashed_credential="-",
        status=status,
        last_heartbeat_at=timezone.now() - timedelta(seconds=seen_ago),
        **fields,
    )


GPU = {"index": 0, "name": "H100-80GB", "utilization": 75, "memory_used_mb": 40960, "memory_total_mb": 81920,
       "temperature_c": 61, "simulated": True}  # fmt: skip


def gpu_labels(node: str, index: str = "0", name: str = "H100-80GB") -> tuple:
    return (("gpu", index), ("gpu_name", name), ("node", node))


def test_node_gauges_come_from_the_last_heartbeat():
    second = {**GPU, "index": 1, "utilization": 10, "memory_used_mb": 1024, "temperature_c": 40}
    _node("rig-a", telemetry={"in_flight": 3, "gpus": [GPU, second]})
    samples = _samples()
    assert samples["gpucloud:node_up", (("node", "rig-a"),)] == 1
    assert samples["gpucloud:node_requests_running", (("node", "rig-a"),)] == 3
    assert samples["gpucloud:node_gpu_utilization_ratio", gpu_labels("rig-a")] == 0.75
    assert samples["gpucloud:node_gpu_memory_used_bytes", gpu_labels("rig-a")] == 40960 * 2**20
    assert samples["gpucloud:node_gpu_memory_total_bytes", gpu_labels("rig-a")] == 81920 * 2**20
    assert samples["gpucloud:node_gpu_temperature_celsius", gpu_labels("rig-a")] == 61
    assert samples["gpucloud:node_gpu_utilization_ratio", gpu_labels("rig-a", "1")] == 0.10
    assert samples["gpucloud:node_gpu_temperature_celsius", gpu_labels("rig-a", "1")] == 40


def test_a_silent_node_is_down_and_its_stale_figures_are_left_out(settings):
    _node("rig-silent", seen_ago=settings.WORKER_OFFLINE_AFTER + 5, telemetry={"gpus": [GPU]})
    _node("rig-off", status=WorkerNode.Status.OFFLINE, telemetry={"gpus": [GPU]})
    samples = _samples()
    assert samples["gpucloud:node_up", (("node", "rig-silent"),)] == 0
    assert samples["gpucloud:node_up", (("node", "rig-off"),)] == 0
    assert not [key for key in samples if key[0].startswith("gpucloud:node_gpu_")]


def test_nodes_that_left_or_were_revoked_are_not_listed():
    _node("rig-left", status=WorkerNode.Status.LEFT)
    _node("rig-revoked", credential_revoked_at=timezone.now())
    _node("rig-draining", status=WorkerNode.Status.DRAINING)
    nodes = {dict(labels)["node"]: value for (name, labels), value in _samples().items() if name == "gpucloud:node_up"}
    assert nodes == {"rig-draining": 1}


def test_a_hostile_heartbeat_value_is_skipped():
    _node("rig-odd", telemetry={"in_flight": "many", "gpus": [{**GPU, "utilization": True, "temperature_c": "hot"}]})
    samples = _samples()
    assert samples["gpucloud:node_requests_running", (("node", "rig-odd"),)] == 0
    assert ("gpucloud:node_gpu_utilization_ratio", gpu_labels("rig-odd")) not in samples
    assert ("gpucloud:node_gpu_temperature_celsius", gpu_labels("rig-odd")) not in samples
    assert samples["gpucloud:node_gpu_memory_used_bytes", gpu_labels("rig-odd")] == 40960 * 2**20


def test_requests_waiting_per_deployment_are_read_from_the_queues(catalog, user):
    deployment = Deployment.objects.select_related("model").order_by("name").first()
    other = Deployment.objects.exclude(pk=deployment.pk).select_related("model").first()
    for i in range(3):
        jobqueue.enqueue(
            queue=deployment.queue_name,
            account=user.pk,
            priority=3,
            request_id=f"req_waiting_{i}",
            attempt=1,
            kind=KIND_GENERATE,
            spec={},
            reply_channel="nowhere",
            limits={},
        )
    samples = _samples()
    labels = (("deployment", deployment.name), ("model_name", deployment.model.model_id))
    assert samples["gpucloud:num_requests_waiting", labels] == 3
    other_labels = (("deployment", other.name), ("model_name", other.model.model_id))
    assert samples["gpucloud:num_requests_waiting", other_labels] == 0

"""Placement of replicas on nodes by GPU memory, and the deployment status it implies."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from django.utils import timezone

from deployments import placement
from deployments.models import CatalogModel, Deployment, Replica, WorkerNode
from deployments.services import deployment_create, deployment_delete, deployment_stop, deployment_update

pytestmark = pytest.mark.django_db
_ids = itertools.count(1)


def node(*gpu_gb: int, engine: str = "simulated", name: str | None = None, status=WorkerNode.Status.ONLINE):
    number = next(_ids)
    return WorkerNode.objects.create(
        name=name or f"node-{number}",
        engine=engine,
        credential_prefix=f"{number:012x}",
        hashed_credential="-",
        status=status,
        last_heartbeat_at=timezone.now(),
        gpus=[{"index": i, "name": "A100-80GB", "memory_total_mb": gb * 1024} for i, gb in enumerate(gpu_gb)],
    )


@pytest.fixture
def model():
    return CatalogModel.objects.create(
        model_id="test-13b", family="test", parameters_billion=Decimal("13"), memory_gb={"fp16": 30, "int4": 9}
    )


def placed(deployment) -> list[tuple[str, list[int]]]:
    return sorted((r.node.name, r.gpu_indices) for r in deployment.replica_set.select_related("node"))


def test_it_binpacks_by_default(model):
    node(80, name="roomy")
    node(40, name="snug")
    deployment = deployment_create(name="d", model=model)
    assert placed(deployment) == [("snug", [0])]
    assert (deployment.status, deployment.status_reason) == ("starting", "0 of 1 replicas loaded")


def test_spread_uses_the_emptiest_node_and_replicas_prefer_different_nodes(model):
    node(80, name="roomy")
    node(40, name="snug")
    deployment = deployment_create(name="d", model=model, placement_strategy="spread")
    assert placed(deployment) == [("roomy", [0])]
    deployment = deployment_update(deployment=deployment, replicas=2)
    assert placed(deployment) == [("roomy", [0]), ("snug", [0])]


def test_a_model_larger_than_one_gpu_spans_the_gpus_of_one_node(model):
    node(24, 24, name="pair")
    node(24, name="single")
    deployment = deployment_create(name="d", model=model)
    assert placed(deployment) == [("pair", [0, 1])]


def test_when_nothing_fits_it_waits_in_scheduling_with_the_reason(model):
    node(24, name="small")
    deployment = deployment_create(name="d", model=model)
    assert deployment.status == "scheduling"
    assert "no online 'simulated' node has 30 GB of free GPU memory for test-13b at fp16" in deployment.status_reason
    assert placed(deployment) == []

    deployment = deployment_update(deployment=deployment, precision="int4")
    assert placed(deployment) == [("small", [0])]
    assert deployment.status == "starting"


def test_memory_already_taken_counts(model):
    node(64, name="only")
    first = deployment_create(name="first", model=model)
    second = deployment_create(name="second", model=model)
    third = deployment_create(name="third", model=model)
    assert placed(first) == placed(second) == [("only", [0])]
    assert third.status == "scheduling"


def test_only_nodes_of_the_deployments_engine_and_online_are_used(model):
    node(80, engine="hf", name="other-engine")
    node(80, name="offline", status=WorkerNode.Status.OFFLINE)
    node(80, name="draining", status=WorkerNode.Status.DRAINING)
    assert deployment_create(name="d", model=model).status == "scheduling"


def test_replicas_on_a_node_that_goes_offline_are_placed_again(model):
    doomed = node(80, name="doomed")
    deployment = deployment_create(name="d", model=model)
    assert placed(deployment) == [("doomed", [0])]
    node(80, name="survivor")
    WorkerNode.objects.filter(pk=doomed.pk).update(status=WorkerNode.Status.OFFLINE)
    placement.reconcile()
    assert placed(deployment) == [("survivor", [0])]


def test_a_silent_node_counts_as_offline(model, settings):
    silent = node(80, name="silent")
    deployment = deployment_create(name="d", model=model)
    WorkerNode.objects.filter(pk=silent.pk).update(
        last_heartbeat_at=timezone.now() - timezone.timedelta(seconds=settings.WORKER_OFFLINE_AFTER + 1)
    )
    placement.reconcile()
    assert placed(deployment) == []
    assert Deployment.objects.get(pk=deployment.pk).status == "scheduling"


def test_a_node_heard_by_its_socket_keeps_its_replicas_while_its_heartbeats_database_writes_lag(model, settings):
    """Under load a heartbeat's database write waits its turn; the web process holding the node's
    socket heard it (its presence in Redis), so it is alive: nothing moves."""
    from deployments.presence import worker_gone, worker_seen

    busy = node(80, name="busy-under-load")
    deployment = deployment_create(name="d", model=model)
    WorkerNode.objects.filter(pk=busy.pk).update(
        last_heartbeat_at=timezone.now() - timezone.timedelta(seconds=settings.WORKER_OFFLINE_AFTER + 5)
    )
    worker_seen(busy.name)
    try:
        placement.reconcile()
        assert placed(deployment) == [("busy-under-load", [0])]
    finally:
        worker_gone(busy.name)
    placement.reconcile()  # neither heard nor on record: gone
    assert placed(deployment) == []


def test_silence_while_heartbeats_could_not_be_recorded_unplaces_nothing(model, settings):
    """After a database outage every node looks silent until its next heartbeat: keep their replicas."""
    from deployments.presence import INTERRUPTED_KEY, heartbeats_interrupt
    from gpucloud.redis_client import get_redis

    quiet = node(80, name="quiet")
    deployment = deployment_create(name="d", model=model)
    WorkerNode.objects.filter(pk=quiet.pk).update(
        last_heartbeat_at=timezone.now() - timezone.timedelta(seconds=settings.WORKER_OFFLINE_AFTER + 30)
    )
    heartbeats_interrupt()
    try:
        placement.reconcile()
        assert placed(deployment) == [("quiet", [0])]
    finally:
        get_redis().delete(INTERRUPTED_KEY)
    placement.reconcile()  # once heartbeats are recorded again, silence means absence again
    assert placed(deployment) == []


def test_status_follows_the_replicas_reports(model):
    node(80)
    deployment = deployment_update(deployment=deployment_create(name="d", model=model), replicas=2)
    assert deployment.status in ("starting", "scheduling")
    node(80)
    placement.reconcile()
    replicas = list(Replica.objects.filter(deployment=deployment))
    Replica.objects.filter(pk=replicas[0].pk).update(state="running")
    placement.reconcile()
    assert Deployment.objects.get(pk=deployment.pk).status_reason == "1 of 2 replicas loaded"
    Replica.objects.filter(deployment=deployment).update(state="running")
    placement.reconcile()
    assert Deployment.objects.get(pk=deployment.pk).status == "running"

    Replica.objects.filter(pk=replicas[1].pk).update(state="failed", reason="out of memory")
    placement.reconcile()
    failed = Deployment.objects.get(pk=deployment.pk)
    assert failed.status == "failed" and "out of memory" in failed.status_reason
    # Changing it (or asking again) places it afresh.
    assert deployment_update(deployment=failed, replicas=2).status == "starting"


def test_scaling_down_stopping_and_deleting(model):
    node(80)
    node(80)
    deployment = deployment_create(name="d", model=model, replicas=2)
    assert len(placed(deployment)) == 2
    assert len(placed(deployment_update(deployment=deployment, replicas=1))) == 1
    stopped = deployment_stop(deployment=deployment)
    assert (stopped.status, placed(stopped)) == ("stopped", [])
    deployment_delete(deployment=stopped)
    assert not Deployment.objects.filter(name="d").exists()


def test_memory_need_is_estimated_when_the_catalog_is_silent():
    bare = CatalogModel.objects.create(model_id="bare-7b", family="t", parameters_billion=Decimal("7"))
    deployment = Deployment(model=bare, precision="int8", engine="simulated")
    assert placement.replica_memory_gb(deployment) == pytest.approx(8.4)
    assert placement.replica_memory_gb(Deployment(model=bare, engine="openai")) == 0


def test_replicas_that_had_to_share_a_node_move_apart_when_another_joins(model):
    node(80, name="first")
    deployment = deployment_create(name="d", model=model, replicas=2)
    assert placed(deployment) == [("first", [0]), ("first", [0])]
    node(80, name="second")
    placement.reconcile()
    assert sorted(name for name, _ in placed(deployment)) == ["first", "second"]
    placement.reconcile()  # and stays put
    assert sorted(name for name, _ in placed(deployment)) == ["first", "second"]

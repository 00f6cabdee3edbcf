"""Autoscaling: the rule as a pure function, the service on real queues and nodes, and the ways an
operator sets the bounds (API, dashboard, admin rules)."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from deployments import autoscale
from deployments.autoscale import Load, decide, is_quiet
from deployments.models import CatalogModel, Deployment, Replica, WorkerNode
from deployments.services import deployment_create, deployment_update
from gpucloud.redis_client import get_redis
from inference import jobqueue

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BUSY = Load(
    replicas=1, min_replicas=1, max_replicas=3, all_loaded=True, oldest_wait=5.0, waiting=4, busy=8, slots=8,
    room_elsewhere=True,
)  # fmt: skip
IDLE = replace(BUSY, replicas=2, oldest_wait=0.0, waiting=0, busy=1, slots=16)


# --- the rule ---------------------------------------------------------------------------------


def test_it_adds_a_replica_while_requests_wait_longer_than_the_target():
    decision = decide(BUSY, quiet_since=None, now=NOW, target_wait=2, quiet_seconds=60)
    assert (decision.replicas, decision.quiet_since) == (2, None)
    assert decide(replace(BUSY, oldest_wait=1.5), quiet_since=None, now=NOW, target_wait=2).replicas == 1


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 3},  # at the maximum
        {"all_loaded": False},  # the last one added is still loading
        {"room_elsewhere": False},  # no other node has the GPU memory
    ],
)
def test_it_adds_none_when_it_cannot_help(change):
    assert decide(replace(BUSY, **change), quiet_since=None, now=NOW, target_wait=2).replicas == BUSY.replicas + (
        0 if "replicas" not in change else 2
    )


def test_it_removes_one_after_the_quiet_period_and_never_goes_below_the_minimum():
    first = decide(IDLE, quiet_since=None, now=NOW, quiet_seconds=60)
    assert (first.replicas, first.quiet_since) == (2, NOW)  # the quiet starts
    early = decide(IDLE, quiet_since=NOW, now=NOW + timedelta(seconds=59), quiet_seconds=60)
    assert (early.replicas, early.quiet_since) == (2, NOW)
    later = NOW + timedelta(seconds=60)
    down = decide(IDLE, quiet_since=NOW, now=later, quiet_seconds=60)
    assert (down.replicas, down.quiet_since) == (1, later)  # and the clock starts again
    at_minimum = decide(replace(IDLE, replicas=1, slots=8), quiet_since=NOW, now=NOW + timedelta(hours=1))
    assert at_minimum.replicas == 1
    floor = replace(IDLE, replicas=2, min_replicas=2)
    assert decide(floor, quiet_since=NOW, now=NOW + timedelta(hours=1)).replicas == 2


def test_load_ends_the_quiet():
    assert not is_quiet(replace(IDLE, waiting=1))
    assert not is_quiet(replace(IDLE, busy=5))  # 5 > half of the 8 slots one replica fewer leaves
    assert is_quiet(replace(IDLE, busy=4))
    decision = decide(replace(IDLE, busy=9), quiet_since=NOW - timedelta(hours=1), now=NOW, quiet_seconds=60)
    assert (decision.replicas, decision.quiet_since) == (2, None)


def test_a_count_outside_the_bounds_is_brought_inside():
    assert decide(replace(IDLE, replicas=5), quiet_since=None, now=NOW).replicas == 3
    assert decide(replace(IDLE, replicas=1, min_replicas=2), quiet_since=None, now=NOW).replicas == 2


# --- the service on real queues ---------------------------------------------------------------

_ids = itertools.count(1)


def make_node(name: str, gpu_gb: int = 80, **fields) -> WorkerNode:
    number = next(_ids)
    return WorkerNode.objects.create(
        name=name,
        credential_prefix=f"a{number:011x}",
        hashed_credential="-",
        status=WorkerNode.Status.ONLINE,
        last_heartbeat_at=datetime.now(UTC),
        slots=4,
        gpus=[{"index": 0, "name": "A100-80GB", "memory_total_mb": gpu_gb * 1024}],
        **fields,
    )


@pytest.fixture
def model(db):
    return CatalogModel.objects.create(
        model_id="auto-8b", family="test", parameters_billion=Decimal("8"), memory_gb={"fp16": 30}
    )


@pytest.fixture
def queue():
    """The deployment's queue, emptied before and after."""
    name = "deployment.auto"

    def empty():
        redis = get_redis()
        for key in redis.scan_iter(match=f"{name}*"):
            redis.delete(key)
        redis.delete(f"gpucloud:active:{name}")

    empty()
    yield name
    empty()


def _enqueue(queue: str, request_id: str) -> None:
    jobqueue.enqueue(
        queue=queue, account=1, priority=3, request_id=request_id, attempt=1, kind="generate",
        spec={}, reply_channel="x", limits={"prompt_tokens": 1, "completion_tokens": 1},
    )  # fmt: skip


def _loaded(deployment: Deployment) -> Deployment:
    Replica.objects.filter(deployment=deployment).update(state=Replica.State.RUNNING)
    Deployment.objects.filter(pk=deployment.pk).update(status=Deployment.Status.RUNNING)
    return Deployment.objects.get(pk=deployment.pk)


def test_oldest_wait_reads_the_queue(queue):
    assert jobqueue.oldest_wait(queue) == 0.0
    _enqueue(queue, "req_a")
    time.sleep(0.01)
    _enqueue(queue, "req_b")
    assert 10 <= jobqueue.oldest_wait(queue, time.time() + 10) < 11


@pytest.mark.django_db
def test_it_adds_a_replica_on_another_node_under_load_and_removes_it_when_quiet(model, queue, settings):
    settings.AUTOSCALE_QUEUE_WAIT_TARGET, settings.AUTOSCALE_QUIET_SECONDS = 2, 60
    first = make_node("first", gpu_gb=40)
    make_node("second")
    deployment = _loaded(deployment_create(name="auto", model=model, min_replicas=1, max_replicas=2))
    assert [r.node_id for r in deployment.replica_set.all()] == [first.pk]

    _enqueue(queue, "req_1")
    now = datetime.fromtimestamp(time.time() + 5, tz=UTC)  # it has waited 5 s
    assert autoscale.autoscale(now=now) == [("auto", 1, 2)]
    deployment = Deployment.objects.get(pk=deployment.pk)
    assert sorted(r.node.name for r in deployment.replica_set.select_related("node")) == ["first", "second"]
    # Still waiting, but the new replica is loading: nothing more (and 2 is the maximum anyway).
    assert autoscale.autoscale(now=now) == []

    deployment = _loaded(deployment)
    get_redis().delete(*get_redis().keys(f"{queue}.a1*"))  # served
    assert autoscale.autoscale(now=now) == []
    assert Deployment.objects.get(pk=deployment.pk).quiet_since == now
    assert autoscale.autoscale(now=now + timedelta(seconds=59)) == []
    assert autoscale.autoscale(now=now + timedelta(seconds=60)) == [("auto", 2, 1)]
    assert autoscale.autoscale(now=now + timedelta(hours=1)) == []  # the minimum
    assert Deployment.objects.get(pk=deployment.pk).replica_set.count() == 1


@pytest.mark.django_db
def test_a_replica_no_node_can_take_goes_when_quiet(model, queue, settings):
    settings.AUTOSCALE_QUIET_SECONDS = 60
    make_node("only", gpu_gb=40)  # room for one replica
    deployment = deployment_create(name="auto", model=model, replicas=2, max_replicas=2)
    Replica.objects.filter(deployment=deployment).update(state=Replica.State.RUNNING)
    deployment = deployment_update(deployment=deployment, placement="spread")  # status from the replicas
    assert (deployment.status, deployment.replica_set.count()) == ("scheduling", 1)
    now = datetime.now(UTC)
    assert autoscale.autoscale(now=now) == []
    assert autoscale.autoscale(now=now + timedelta(seconds=60)) == [("auto", 2, 1)]
    assert Deployment.objects.get(pk=deployment.pk).status == "running"


@pytest.mark.django_db
def test_it_does_not_stack_replicas_on_a_node_that_has_one(model, queue):
    make_node("only")
    deployment = _loaded(deployment_create(name="auto", model=model, max_replicas=3))
    _enqueue(queue, "req_1")
    assert autoscale.autoscale(now=datetime.fromtimestamp(time.time() + 30, tz=UTC)) == []
    assert Deployment.objects.get(pk=deployment.pk).replicas == 1


@pytest.mark.django_db
def test_it_leaves_fixed_deployments_alone(model, queue):
    make_node("a")
    make_node("b")
    deployment = _loaded(deployment_create(name="auto", model=model))
    _enqueue(queue, "req_1")
    assert autoscale.autoscale(now=datetime.fromtimestamp(time.time() + 30, tz=UTC)) == []
    assert Deployment.objects.get(pk=deployment.pk).replicas == 1


@pytest.mark.django_db
def test_an_unreliable_node_is_no_room(model, queue, settings):
    settings.RELIABILITY_MIN_SCORE = 0.5
    make_node("first")
    make_node("shaky", reliability=0.2)
    deployment = _loaded(deployment_create(name="auto", model=model, max_replicas=2))
    _enqueue(queue, "req_1")
    assert autoscale.autoscale(now=datetime.fromtimestamp(time.time() + 30, tz=UTC)) == []
    assert Deployment.objects.get(pk=deployment.pk).replicas == 1


# --- the bounds -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bounds", "field"),
    [({"min_replicas": 2}, "max_replicas"), ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
     ({"min_replicas": 0, "max_replicas": 2}, "min_replicas"), ({"max_replicas": 65}, "max_replicas")],
)  # fmt: skip
def test_the_bounds_are_checked(model, bounds, field):
    with pytest.raises(ValidationError) as error:
        deployment_create(name="auto", model=model, **bounds)
    assert field in error.value.message_dict


@pytest.mark.django_db
def test_the_replica_count_is_kept_within_the_bounds(model):
    make_node("a")
    deployment = deployment_create(name="auto", model=model, replicas=5, min_replicas=1, max_replicas=2)
    assert deployment.replicas == 2
    deployment = deployment_update(deployment=deployment, min_replicas=3, max_replicas=4)
    assert deployment.replicas == 3
    deployment = deployment_update(deployment=deployment, min_replicas=None, max_replicas=None, replicas=1)
    assert (deployment.replicas, deployment.autoscaled) == (1, False)


@pytest.mark.django_db
def test_operators_set_the_bounds_over_the_api(client, staff, make_key, model):
    _, key = make_key(staff)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}", "content_type": "application/json"}
    body = {"name": "auto", "model": "auto-8b", "min_replicas": 1, "max_replicas": 4}
    created = client.post("/api/deployments", data=json.dumps(body), **headers)
    assert created.status_code == 201, created.content
    assert (created.json()["min_replicas"], created.json()["max_replicas"]) == (1, 4)
    patched = client.patch("/api/deployments/auto", data=json.dumps({"max_replicas": 2}), **headers)
    assert (patched.status_code, patched.json()["max_replicas"]) == (200, 2)
    refused = client.patch("/api/deployments/auto", data=json.dumps({"min_replicas": 3}), **headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "max_replicas"


@pytest.mark.django_db
def test_operators_set_the_bounds_on_the_dashboard(client, staff, model):
    make_node("a")
    client.force_login(staff)
    data = {
        "name": "auto", "model": "auto-8b", "engine": "", "engine_config": "", "precision": "fp16",
        "gpu_profile": "", "placement": "binpack", "replicas": "1", "min_replicas": "1", "max_replicas": "3",
    }  # fmt: skip
    response = client.post("/fleet/deployments/", data)
    assert response.status_code == 302
    deployment = Deployment.objects.get(name="auto")
    assert (deployment.min_replicas, deployment.max_replicas) == (1, 3)
    assert "autoscaled 1\u20133" in client.get("/fleet/deployments/").content.decode()

    edit = client.post(
        "/fleet/deployments/auto/edit/",
        {**data, "min_replicas": "4", "max_replicas": "3"},
    )
    assert edit.status_code == 400
    assert Deployment.objects.get(name="auto").max_replicas == 3


@pytest.mark.django_db
def test_the_demo_deployments_autoscale_over_the_local_nodes(catalog):
    from deployments.services import demo_autoscale_ensure

    demo_autoscale_ensure(catalog, nodes=2)
    assert set(Deployment.objects.values_list("min_replicas", "max_replicas")) == {(1, 2)}
    deployment_update(deployment=Deployment.objects.get(pk=catalog[0].pk), max_replicas=6)
    deployment_update(deployment=Deployment.objects.get(pk=catalog[1].pk), replicas=2)
    demo_autoscale_ensure(catalog, nodes=3)  # an operator's bounds stay; a restart starts from the minimum
    assert Deployment.objects.get(pk=catalog[0].pk).max_replicas == 6
    assert Deployment.objects.get(pk=catalog[1].pk).max_replicas == 3
    assert Deployment.objects.get(pk=catalog[1].pk).replicas == 1

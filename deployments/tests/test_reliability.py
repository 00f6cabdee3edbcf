"""Node reliability: uptime and job history counted cheaply, a score from it, and placement using it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings

from deployments import reliability
from deployments.fleet import node_heartbeat
from deployments.models import CatalogModel, NodeActivity, WorkerNode
from deployments.services import deployment_create, deployment_update
from gpucloud.redis_client import get_redis

pytestmark = pytest.mark.django_db
_ids = itertools.count(1)
NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_activity_counters():
    redis = get_redis()
    for key in redis.scan_iter(match="gpucloud:activity:*"):
        redis.delete(key)


def make_node(name: str, *, registered_at: datetime | None = None, score: float = 1.0, gpu_gb: int = 80):
    number = next(_ids)
    node = WorkerNode.objects.create(
        name=name,
        credential_prefix=f"r{number:011x}",
        hashed_credential="-",
        status=WorkerNode.Status.ONLINE,
        last_heartbeat_at=datetime.now(UTC),
        reliability=score,
        gpus=[{"index": 0, "name": "A100-80GB", "memory_total_mb": gpu_gb * 1024}],
    )
    if registered_at is not None:
        WorkerNode.objects.filter(pk=node.pk).update(registered_at=registered_at)
        node.refresh_from_db()
    return node


def hours_online(node, seconds_per_hour: float, hours: int, *, until: datetime = NOW, **counts) -> None:
    last = reliability.hour_of(until)
    for n in range(hours):
        hour = last - timedelta(hours=n)
        NodeActivity.objects.create(node=node, hour=hour, online_seconds=seconds_per_hour, **counts)


# --- the score --------------------------------------------------------------------------------


def test_a_new_node_starts_fully_reliable():
    assert (
        reliability.reliability_score(online_seconds=0, observed_seconds=0, served=0, lost=0, failed=0, strikes=0)
        == 1.0
    )


def test_downtime_lost_jobs_and_strikes_each_lower_the_score():
    week = 7 * 24 * 3600.0
    always = reliability.reliability_score(
        online_seconds=week, observed_seconds=week, served=1000, lost=0, failed=0, strikes=0
    )
    half_up = reliability.reliability_score(
        online_seconds=week / 2, observed_seconds=week, served=1000, lost=0, failed=0, strikes=0
    )
    losing = reliability.reliability_score(
        online_seconds=week, observed_seconds=week, served=100, lost=100, failed=20, strikes=0
    )
    struck = reliability.reliability_score(
        online_seconds=week, observed_seconds=week, served=1000, lost=0, failed=0, strikes=2, strike_penalty=0.2
    )
    assert always == 1.0
    assert 0.5 < half_up < 0.51
    assert losing == pytest.approx(110 / 230, abs=1e-4)
    assert struck == pytest.approx(0.6)
    assert (
        reliability.reliability_score(online_seconds=week, observed_seconds=week, served=0, lost=0, failed=0, strikes=9)
        == 0.0
    )


def test_a_heartbeat_adds_at_most_the_offline_window():
    assert reliability.online_seconds(None, NOW) == 0
    assert reliability.online_seconds(NOW - timedelta(seconds=1), NOW) == 1
    with override_settings(WORKER_OFFLINE_AFTER=3):
        assert reliability.online_seconds(NOW - timedelta(minutes=10), NOW) == 3


# --- counting: Redis on the hot path, the database in batches -----------------------------------


def test_heartbeats_count_uptime_in_redis_and_a_flush_adds_it_to_the_hourly_rows():
    node = make_node("beating")
    WorkerNode.objects.filter(pk=node.pk).update(last_heartbeat_at=datetime.now(UTC) - timedelta(seconds=2))
    node_heartbeat(node.pk, {"slots": 4, "replicas": {}, "gpus": []})
    node_heartbeat(node.pk, {"slots": 4, "replicas": {}, "gpus": []})
    assert not NodeActivity.objects.exists()  # nothing written per heartbeat

    reliability.record("beating", {reliability.LOST: 1, reliability.SERVED: 3})
    assert reliability.flush() == 1
    row = NodeActivity.objects.get(node=node)
    assert 2 <= row.online_seconds < 3
    assert (row.jobs_lost, row.jobs_served, row.jobs_failed) == (1, 3, 0)

    # Flushed counts are not added twice; new ones are.
    reliability.record("beating", {reliability.FAILED: 2})
    reliability.flush()
    row.refresh_from_db()
    assert (row.jobs_lost, row.jobs_served, row.jobs_failed) == (1, 3, 2)


def test_a_past_hour_is_flushed_into_its_own_row_and_forgotten():
    node = make_node("old-hour")
    earlier = NOW - timedelta(hours=3)
    reliability.record("old-hour", {reliability.ONLINE: 100.0}, now=earlier)
    reliability.record("old-hour", {reliability.ONLINE: 50.0}, now=NOW)
    reliability.flush(now=NOW)
    rows = dict(NodeActivity.objects.filter(node=node).values_list("hour", "online_seconds"))
    assert rows == {reliability.hour_of(earlier): 100.0, reliability.hour_of(NOW): 50.0}
    key = f"gpucloud:activity:{int(reliability.hour_of(NOW).timestamp())}"
    assert get_redis().sismember(reliability.HOURS_KEY, key)  # the current hour stays, for more counts
    assert not get_redis().exists(f"gpucloud:activity:{int(reliability.hour_of(earlier).timestamp())}")


def test_refresh_scores_each_node_against_the_time_the_fleet_was_observed():
    day_ago = NOW - timedelta(days=1, minutes=30)
    steady = make_node("steady", registered_at=day_ago)
    flaky = make_node("flaky", registered_at=day_ago)
    loser = make_node("loser", registered_at=day_ago)
    hours_online(steady, 3600, 24, jobs_served=500)
    hours_online(flaky, 600, 24, jobs_served=500)
    hours_online(loser, 3600, 24, jobs_served=10, jobs_lost=2, jobs_failed=1)
    # Hours nobody was online (the platform was down) count against nobody.
    assert reliability.refresh(now=NOW) == 3

    scores = dict(WorkerNode.objects.values_list("name", "reliability"))
    assert scores["steady"] == 1.0
    assert scores["flaky"] < 0.25
    assert scores["loser"] == pytest.approx(250 / 322, abs=0.001)  # 240 served, 72 lost or failed, 10 of credit
    detail = WorkerNode.objects.get(name="flaky").reliability_detail
    assert detail["uptime"] == pytest.approx(1 / 6, abs=0.001)
    assert detail["jobs_served"] == 12000
    assert reliability.refresh(now=NOW) == 0  # nothing changed: nothing written


def test_verification_strikes_feed_the_score():
    node = make_node("struck", registered_at=NOW - timedelta(hours=2))
    hours_online(node, 3600, 2)
    WorkerNode.objects.filter(pk=node.pk).update(verification_strikes=2)
    reliability.refresh(now=NOW)
    node.refresh_from_db()
    assert node.reliability == pytest.approx(0.6)
    assert node.reliability_detail["verification_strikes"] == 2


# --- placement --------------------------------------------------------------------------------


@pytest.fixture
def model():
    return CatalogModel.objects.create(
        model_id="rel-13b", family="test", parameters_billion=Decimal("13"), memory_gb={"fp16": 30}
    )


def nodes_of(deployment) -> list[str]:
    return sorted(r.node.name for r in deployment.replica_set.select_related("node"))


@override_settings(RELIABILITY_MIN_SCORE=0.5)
def test_a_node_below_the_minimum_gets_no_new_replicas(model):
    make_node("unreliable", score=0.3)
    deployment = deployment_create(name="d", model=model)
    assert deployment.status == "scheduling"
    assert "(1 online node(s) below the reliability minimum take no new replicas.)" in deployment.status_reason
    assert nodes_of(deployment) == []

    make_node("reliable", score=0.9, gpu_gb=40)
    deployment = deployment_update(deployment=deployment, replicas=2)
    assert nodes_of(deployment) == ["reliable"]  # the second replica waits rather than go there


@override_settings(RELIABILITY_MIN_SCORE=0.5)
def test_it_keeps_the_replicas_it_has_when_its_score_falls(model):
    node = make_node("falling", score=1.0)
    deployment = deployment_create(name="d", model=model)
    WorkerNode.objects.filter(pk=node.pk).update(reliability=0.1)
    deployment = deployment_update(deployment=deployment, placement="spread")
    assert nodes_of(deployment) == ["falling"]


def test_placement_prefers_the_more_reliable_node(model):
    # Binpack alone would pick the fuller node.
    make_node("fuller-but-shaky", score=0.6, gpu_gb=40)
    make_node("roomy-and-steady", score=1.0, gpu_gb=80)
    deployment = deployment_create(name="d", model=model)
    assert nodes_of(deployment) == ["roomy-and-steady"]


def test_equal_scores_leave_binpack_to_decide(model):
    make_node("fuller", score=0.97, gpu_gb=40)
    make_node("roomy", score=1.0, gpu_gb=80)
    deployment = deployment_create(name="d", model=model)
    assert nodes_of(deployment) == ["fuller"]


# --- who sees it ------------------------------------------------------------------------------


def test_operators_see_the_score_in_the_workers_api_and_on_the_fleet_page(client, staff, make_key):
    node = make_node("shown", score=0.42)
    WorkerNode.objects.filter(pk=node.pk).update(
        reliability_detail={"uptime": 0.5, "jobs_served": 7, "jobs_lost": 3, "jobs_failed": 1}
    )
    _, key = make_key(staff)
    data = client.get("/api/workers", HTTP_AUTHORIZATION=f"Bearer {key}").json()["data"]
    shown = next(n for n in data if n["name"] == "shown")
    assert shown["reliability"] == {
        "score": 0.42, "placeable": False, "uptime": 0.5, "jobs_served": 7, "jobs_lost": 3, "jobs_failed": 1,
    }  # fmt: skip

    client.force_login(staff)
    page = client.get("/fleet/").content.decode()
    assert 'data-reliability="0.42"' in page
    assert "42%" in page and "no new replicas" in page


def test_the_periodic_step_flushes_and_refreshes_at_most_every_half_minute():
    get_redis().delete(reliability.REFRESH_KEY)
    node = make_node("periodic")
    reliability.record("periodic", {reliability.LOST: 30})
    assert reliability.update() == 1
    assert NodeActivity.objects.get(node=node).jobs_lost == 30
    assert WorkerNode.objects.get(pk=node.pk).reliability < 0.5
    assert reliability.update() is None  # not due yet
    get_redis().delete(reliability.REFRESH_KEY)

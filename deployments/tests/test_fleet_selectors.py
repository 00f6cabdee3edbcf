"""The Fleet page's reads (deployments.selectors): throughput per node from the usage records of
the requests it served, with a 15-minute history, and hints when requests wait while a node with
room idles. Times are explicit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from deployments.models import Deployment, WorkerNode
from deployments.selectors import (
    HISTORY_MINUTES,
    SPARK_LEVELS,
    fleet_hints,
    fleet_snapshot,
    node_summary,
    node_throughput,
)
from inference.models import UsageRecord

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, 30, 40, tzinfo=UTC)
A100 = {"index": 0, "name": "A100-80GB", "memory_total_mb": 81920}


def _served(user, worker: str, at: datetime, completion_tokens: int = 10, status_code: int = 200) -> None:
    record = UsageRecord.objects.create(
        request_id=f"req_{uuid.uuid4().hex}",
        user=user,
        endpoint="chat.completions",
        model="llama-3.1-8b-instruct",
        worker=worker,
        status_code=status_code,
        completion_tokens=completion_tokens,
    )
    UsageRecord.objects.filter(pk=record.pk).update(created_at=at)


def test_throughput_per_node_over_the_last_minute_and_its_history(user):
    _served(user, "box-a", NOW - timedelta(seconds=10), completion_tokens=30)
    _served(user, "box-a", NOW - timedelta(seconds=50), completion_tokens=90)
    _served(user, "box-a", NOW - timedelta(minutes=3), completion_tokens=60)
    _served(user, "box-a", NOW - timedelta(minutes=20), completion_tokens=999)  # before the history
    _served(user, "box-b", NOW - timedelta(minutes=14, seconds=30), completion_tokens=5)
    _served(user, "", NOW, completion_tokens=50)  # refused before reaching a node

    figures = node_throughput(now=NOW)

    assert set(figures) == {"box-a", "box-b"}
    box_a = figures["box-a"]
    assert (box_a["requests_per_second"], box_a["tokens_per_second"]) == (round(2 / 60, 2), 2.0)
    history = box_a["history"]
    assert len(history) == HISTORY_MINUTES
    # The current minute (12:30) last: 12:30:30; 12:29:50 is the minute before; 12:27:40 three before.
    assert [(m["requests"], m["tokens"]) for m in history[-4:]] == [(1, 60), (0, 0), (1, 90), (1, 30)]
    assert history[-2]["level"] == SPARK_LEVELS and history[-2]["y"] == 0  # the busiest minute fills the bar
    assert history[-1]["level"] == round(SPARK_LEVELS * 30 / 90)
    assert history[-1]["y"] == SPARK_LEVELS - history[-1]["level"]
    box_b = figures["box-b"]
    assert (box_b["requests_per_second"], box_b["tokens_per_second"]) == (0.0, 0.0)
    assert box_b["history"][0]["requests"] == 1  # 12:16, the oldest minute shown


def test_a_minute_of_failures_still_shows(user):
    _served(user, "box-a", NOW - timedelta(seconds=5), completion_tokens=0, status_code=500)

    minute = node_throughput(now=NOW)["box-a"]["history"][-1]

    assert (minute["requests"], minute["tokens"], minute["level"]) == (1, 0, 1)


def _idle_node(name: str, *, engine: str = "simulated", in_flight: int = 0, slots: int = 8) -> WorkerNode:
    return WorkerNode.objects.create(
        name=name,
        credential_prefix=uuid.uuid4().hex[:12],
        hashed_credential="-",
        engine=engine,
        slots=slots,
        status=WorkerNode.Status.ONLINE,
        last_heartbeat_at=timezone.now(),
        gpus=[A100],
        telemetry={"in_flight": in_flight, "gpus": [A100]},
    )


def _waiting(name: str, count: int) -> list[dict]:
    return [{"deployment": name, "model": "m", "queue": f"deployment.{name}", "waiting": count}]


def _summaries() -> list[dict]:
    return [node_summary(node) for node in WorkerNode.objects.prefetch_related("replicas__deployment")]


def test_a_hint_when_requests_wait_and_a_node_with_room_idles(catalog):
    llama = Deployment.objects.get(model__model_id="llama-3.1-8b-instruct")
    _idle_node("idle-box")

    hints = fleet_hints(_summaries(), _waiting(llama.name, 3))

    # unit-node-1 already serves llama (and has 4.5 GB left); idle-box has room and serves nothing.
    assert [(h["deployment"], h["node"], h["waiting"], h["need_gb"], h["free_gb"]) for h in hints] == [
        (llama.name, "idle-box", 3, 17.5, 80.0)
    ]
    assert f"3 requests wait for {llama.name} while idle-box" in hints[0]["message"]
    assert f"scale {llama.name} up" in hints[0]["message"]


def test_no_hint_without_waiting_requests_or_idle_room(catalog):
    llama = Deployment.objects.get(model__model_id="llama-3.1-8b-instruct")
    qwen = Deployment.objects.get(model__model_id="qwen2.5-72b-instruct")
    _idle_node("busy-box", in_flight=8, slots=8)  # room in memory, but every slot taken
    _idle_node("openai-box", engine="openai")  # another engine
    small = _idle_node("small-box")
    WorkerNode.objects.filter(pk=small.pk).update(gpus=[{**A100, "memory_total_mb": 10 * 1024}])

    assert fleet_hints(_summaries(), _waiting(llama.name, 0)) == []
    assert fleet_hints(_summaries(), _waiting(llama.name, 2)) == []
    assert fleet_hints(_summaries(), _waiting(qwen.name, 2)) == []  # 42 GB fits none of them


def test_the_snapshot_carries_throughput_and_hints(catalog, user):
    _served(user, "unit-node-1", timezone.now() - timedelta(seconds=5), completion_tokens=120)

    snapshot = fleet_snapshot()

    node = next(n for n in snapshot["nodes"] if n["name"] == "unit-node-1")
    assert node["throughput"]["tokens_per_second"] == 2.0
    assert {r["memory_gb"] for r in node["replicas"]} == {17.5, 16.0, 42.0}
    assert node["gpus"][0]["memory_total_gb"] == 80.0
    assert snapshot["hints"] == []

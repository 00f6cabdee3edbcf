from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments.fleet import join_token_create, node_register
from deployments.models import WorkerNode
from deployments.selectors import fleet_snapshot
from gpucloud.redis_client import get_redis
from inference import jobqueue
from nodeprotocol import VERSION as PROTOCOL

pytestmark = pytest.mark.django_db

URL = reverse("fleet:fleet")
A100 = {"index": 0, "name": "A100-80GB", "memory_total_mb": 81920}


def _node(name: str, *, status=WorkerNode.Status.ONLINE, telemetry=None) -> WorkerNode:
    """A node registered with a join token, as if it had just sent a heartbeat with ``telemetry``."""
    _, token = join_token_create(name="rack 3")
    node, _ = node_register(
        token=token,
        name=name,
        host=f"{name}.example.net",
        engine="simulated",
        slots=8,
        gpus=[A100],
        protocol=PROTOCOL,
    )
    WorkerNode.objects.filter(pk=node.pk).update(
        status=status, last_heartbeat_at=timezone.now(), telemetry=telemetry or {}
    )
    return WorkerNode.objects.get(pk=node.pk)


def _busy_telemetry() -> dict:
    gpu = {**A100, "utilization": 73, "memory_used_mb": 40960, "temperature_c": 70}
    return {"in_flight": 3, "slots": 8, "queues": [], "gpus": [gpu, {**gpu, "index": 1, "utilization": 12}]}


def test_it_requires_login(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={URL}"


def test_it_rejects_outsider(client, user):
    client.force_login(user)
    assert client.get(URL).status_code == 403


def test_it_works(client, staff, catalog):
    node = _node("gpu-box", telemetry=_busy_telemetry())
    client.force_login(staff)
    response = client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()

    assert node.name in content
    assert "gpu-box.example.net" in content
    assert '<span class="state state-online">online</span>' in content
    assert "GPU 0 · A100-80GB" in content and "GPU 1 · A100-80GB" in content
    assert "73%" in content and "12%" in content
    assert "40 / 80 GB" in content
    assert "70 °C" in content
    assert reverse("fleet:node-revoke", args=[node.pk]) in content
    # One row per running deployment, with its queue.
    for deployment in catalog:
        assert f"<code>{deployment.queue_name}</code>" in content
    # The live part: the script and the URL pattern it fills in for revoke links.
    assert "js/fleet.js" in content
    assert reverse("fleet:node-revoke", args=[0]) in content


def test_it_renders_the_live_snapshot(client, staff, catalog):
    _node("gpu-box", telemetry=_busy_telemetry())
    client.force_login(staff)
    response = client.get(URL)
    # The page renders what /ws/dashboard/ pushes, so the first paint and the live updates agree.
    snapshot = response.context["snapshot"]
    assert [n["id"] for n in snapshot["nodes"]] == [n["id"] for n in fleet_snapshot()["nodes"]]
    assert snapshot["queues"] == fleet_snapshot()["queues"]
    # The catalog fixture's own node (idle, 8 slots) counts too.
    assert response.context["totals"] == {"online": 2, "nodes": 2, "in_flight": 3, "slots": 16, "waiting": 0}


def test_it_shows_queue_depth(client, staff, catalog):
    deployment = catalog[0]
    queues = [jobqueue.account_queue(deployment.queue_name, account) for account in (1, 2)]
    for account, priority in [(1, 0), (1, 0), (2, 3)]:  # two accounts, and a lower priority tier
        jobqueue.enqueue(
            queue=deployment.queue_name,
            account=account,
            priority=priority,
            request_id=f"req_{account}_{priority}",
            attempt=1,
            kind="generate",
            spec={},
            reply_channel="specific.x!y",
            limits={},
        )
    try:
        client.force_login(staff)
        response = client.get(URL)
    finally:
        get_redis().delete(deployment.queue_name, *jobqueue.priority_keys(queues))
    waiting = {q["deployment"]: q["waiting"] for q in response.context["snapshot"]["queues"]}
    assert waiting[deployment.name] == 3
    assert response.context["totals"]["waiting"] == 3
    assert '<span class="waiting waiting-some">3</span>' in response.content.decode()


def test_it_shows_states(client, staff):
    _node("draining-box", status=WorkerNode.Status.DRAINING)
    stale = _node("silent-box")
    WorkerNode.objects.filter(pk=stale.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    gone = _node("gone-box", status=WorkerNode.Status.LEFT)
    client.force_login(staff)
    content = client.get(URL).content.decode()
    assert "state state-draining" in content
    # A node silent for longer than WORKER_OFFLINE_AFTER is offline, whatever it last said.
    assert '<span class="state state-offline">offline</span>' in content
    assert "row-inactive" in content
    # Nodes that left the fleet are not listed.
    assert gone.name not in content


def test_it_shows_an_empty_fleet(client, staff):
    client.force_login(staff)
    content = client.get(URL).content.decode()
    assert '<p class="empty" id="fleet-nodes-empty">' in content  # visible, not hidden
    assert '<div class="table-wrap" id="fleet-nodes" hidden>' in content
    assert reverse("fleet:tokens") in content


def test_it_escapes_node_fields(client, staff):
    node = _node("box")
    WorkerNode.objects.filter(pk=node.pk).update(host="<script>alert(1)</script>")
    client.force_login(staff)
    content = client.get(URL).content.decode()
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_nav_links_to_it_for_staff_only(staff, user):
    staff_client, user_client = Client(), Client()
    staff_client.force_login(staff)
    user_client.force_login(user)
    assert f'href="{URL}"' in staff_client.get(reverse("dashboard:keys")).content.decode()
    assert f'href="{URL}"' not in user_client.get(reverse("dashboard:keys")).content.decode()
    # The link is marked current on the fleet page; the Join tokens page has a nav link of its own.
    assert f'href="{URL}" aria-current="page"' in staff_client.get(URL).content.decode()
    tokens = staff_client.get(reverse("fleet:tokens")).content.decode()
    assert f'href="{URL}" aria-current="page"' not in tokens
    assert f'href="{reverse("fleet:tokens")}" aria-current="page"' in tokens


def test_it_shows_each_nodes_replicas_throughput_and_memory_to_the_tenth(client, staff, catalog, user):
    import uuid

    from inference.models import UsageRecord

    node = WorkerNode.objects.get(name="unit-node-1")
    gpu = {**A100, "utilization": 5, "memory_used_mb": round(75.5 * 1024), "temperature_c": 40}
    WorkerNode.objects.filter(pk=node.pk).update(telemetry={"in_flight": 0, "queues": [], "gpus": [gpu]})
    UsageRecord.objects.create(
        request_id=f"req_{uuid.uuid4().hex}",
        user=user,
        endpoint="chat.completions",
        worker=node.name,
        status_code=200,
        completion_tokens=90,
    )
    client.force_login(staff)

    content = client.get(URL).content.decode()

    assert "75.5 / 80 GB" in content
    for deployment, memory in [("llama-3-1-8b-instruct", "17.5"), ("qwen2-5-72b-instruct", "42")]:
        assert (
            f'<span class="replica-node">{deployment}</span> <span class="muted">GPU 0 · {memory} GB</span>' in content
        )
    assert '<span class="rate" data-rate="tokens">1.5</span> tok/s' in content  # 90 tokens in the last minute
    assert '<span class="rate" data-rate="requests">0.02</span> req/s' in content
    assert content.count('<rect x="') == 15  # a sparkline of 15 minutes
    assert "css/fleet.css" in content


def test_it_hints_when_requests_wait_while_a_node_with_room_idles(client, staff, catalog):
    deployment = next(d for d in catalog if d.model.model_id == "llama-3.1-8b-instruct")
    idle = _node("idle-box")
    jobqueue.enqueue(
        queue=deployment.queue_name,
        account=1,
        priority=0,
        request_id="req_waiting",
        attempt=1,
        kind="generate",
        spec={},
        reply_channel="specific.x!y",
        limits={},
    )
    try:
        client.force_login(staff)
        response = client.get(URL)
    finally:
        get_redis().delete(
            deployment.queue_name, *jobqueue.priority_keys([jobqueue.account_queue(deployment.queue_name, 1)])
        )

    hints = response.context["snapshot"]["hints"]
    assert [(h["deployment"], h["node"]) for h in hints] == [(deployment.name, idle.name)]
    assert f"1 request wait for {deployment.name} while {idle.name} has free slots" in response.content.decode()

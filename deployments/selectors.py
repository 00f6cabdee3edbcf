"""Reads of the catalog and deployments."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from deployments.models import CatalogModel, Deployment, Replica, WorkerNode


def serving_deployments() -> QuerySet[Deployment]:
    """Deployments with at least one replica loaded on a node (whatever their overall status)."""
    return Deployment.objects.exclude(status__in=[Deployment.Status.STOPPING, Deployment.Status.STOPPED]).filter(
        replica_set__state=Replica.State.RUNNING
    )


def servable_models() -> QuerySet[CatalogModel]:
    """Models with a replica serving: what ``GET /v1/models`` lists."""
    return CatalogModel.objects.filter(deployments__in=serving_deployments()).distinct()


def model_readiness() -> dict[str, bool]:
    """Every deployed catalog model (not stopped) and whether a replica of it is serving now."""
    serving = set(servable_models().values_list("model_id", flat=True))
    deployed = (
        Deployment.objects.exclude(status__in=[Deployment.Status.STOPPED, Deployment.Status.STOPPING])
        .values_list("model__model_id", flat=True)
        .distinct()
    )
    return {model_id: model_id in serving for model_id in sorted(deployed)}


def resolve_model(name: str) -> CatalogModel | None:
    """The catalog model a client means by ``name``: its id or one of its aliases."""
    return (
        CatalogModel.objects.filter(model_id=name).first() or CatalogModel.objects.filter(aliases__alias=name).first()
    )


def running_deployment_for(name: str) -> tuple[CatalogModel | None, Deployment | None]:
    """The catalog model ``name`` resolves to and a running deployment of it (either may be None)."""
    model = resolve_model(name)
    if model is None:
        return None, None
    deployment = serving_deployments().filter(model=model).order_by("created_at").distinct().first()
    return model, deployment


def queue_depth(queue_name: str) -> int:
    """Requests waiting in a deployment's queues, over every account and priority."""
    from inference.jobqueue import waiting

    return waiting(queue_name)


def queue_depths() -> list[dict]:
    return [
        {"deployment": d.name, "model": d.model.model_id, "queue": d.queue_name, "waiting": queue_depth(d.queue_name)}
        for d in Deployment.objects.exclude(status=Deployment.Status.STOPPED).select_related("model")
    ]


def visible_nodes(user) -> QuerySet[WorkerNode]:
    """Staff see the whole fleet; a GPU host sees the nodes joined with its own tokens."""
    nodes = WorkerNode.objects.select_related("join_token").prefetch_related("replicas__deployment")
    return nodes if user.is_staff else nodes.filter(join_token__created_by=user)


def _gpu_figures(gpu: dict) -> dict:
    """A GPU's telemetry with its memory in GB as well (to 0.1 GB: a 75.5 GB replica shows as such)."""
    figures = dict(gpu)
    for name in ("memory_used", "memory_total"):
        value = gpu.get(f"{name}_mb")
        figures[f"{name}_gb"] = round(value / 1024, 1) if isinstance(value, int | float) else None
    return figures


def node_summary(node: WorkerNode) -> dict:
    telemetry = node.telemetry or {}
    return {
        "id": node.pk,
        "name": node.name,
        "host": node.host,
        "engine": node.engine,
        "status": node.effective_status,
        "credential_revoked": node.credential_revoked_at is not None,
        "slots": node.slots,
        "in_flight": telemetry.get("in_flight", 0),
        "queues": telemetry.get("queues", []),
        "gpus": [_gpu_figures(gpu) for gpu in telemetry.get("gpus") or node.gpus if isinstance(gpu, dict)],
        "replicas": [
            {"deployment": r.deployment.name, "state": r.state, "gpus": r.gpu_indices, "memory_gb": r.memory_gb}
            for r in node.replicas.all()
        ],
        "last_heartbeat_at": node.last_heartbeat_at.isoformat() if node.last_heartbeat_at else None,
        "registered_at": node.registered_at.isoformat(),
        # Marketplace: the node's reliability score and what it is made of (deployments.reliability).
        "reliability": {
            "score": node.reliability,
            "placeable": node.reliability >= settings.RELIABILITY_MIN_SCORE,
            **(node.reliability_detail or {}),
        },
    }


def fleet_snapshot(user=None, *, now=None) -> dict:
    """The Fleet page's figures (its first render and every live update): the nodes with their
    replicas, throughput and short history, the queues, and hints."""
    nodes = visible_nodes(user) if user is not None else WorkerNode.objects.prefetch_related("replicas__deployment")
    summaries = [node_summary(n) for n in nodes.exclude(status=WorkerNode.Status.LEFT)]
    throughput = node_throughput(now=now)
    for summary in summaries:
        summary["throughput"] = throughput.get(summary["name"]) or _no_throughput()
    queues = queue_depths()
    return {"nodes": summaries, "queues": queues, "hints": fleet_hints(summaries, queues)}


# --- Throughput per node, from the usage records of the requests each node served --------------

HISTORY_MINUTES = 15
RATE_WINDOW_SECONDS = 60
SPARK_LEVELS = 20  # a sparkline bar's height is 0..SPARK_LEVELS (the SVG's viewBox height)


def _no_throughput() -> dict:
    return {
        "requests_per_second": 0.0,
        "tokens_per_second": 0.0,
        "history": [{"requests": 0, "tokens": 0, "level": 0, "y": SPARK_LEVELS}] * HISTORY_MINUTES,
    }


def node_throughput(*, now=None) -> dict[str, dict]:
    """Per node name (``UsageRecord.worker``): requests and generated tokens per second over the
    last minute, and requests and tokens per minute for the last ``HISTORY_MINUTES`` minutes
    (oldest first, the current minute last) with each minute's sparkline ``level`` and ``y``.

    A request counts when it ends (its usage record is written then); two aggregate queries on the
    indexed ``created_at``, whatever the traffic.
    """
    from datetime import UTC, timedelta

    from django.db.models import Count, Q, Sum
    from django.db.models.functions import TruncMinute
    from django.utils import timezone

    from inference.models import UsageRecord

    now = now or timezone.now()
    current = now.astimezone(UTC).replace(second=0, microsecond=0)
    minutes = [current - timedelta(minutes=HISTORY_MINUTES - 1 - i) for i in range(HISTORY_MINUTES)]
    recent = now - timedelta(seconds=RATE_WINDOW_SECONDS)
    served = UsageRecord.objects.filter(created_at__gte=minutes[0], created_at__lte=now).exclude(worker="").order_by()
    result: dict[str, dict] = {}
    for row in served.values("worker").annotate(
        requests=Count("id", filter=Q(created_at__gte=recent)),
        tokens=Sum("completion_tokens", filter=Q(created_at__gte=recent)),
    ):
        result[row["worker"]] = {
            "requests_per_second": round(row["requests"] / RATE_WINDOW_SECONDS, 2),
            "tokens_per_second": round((row["tokens"] or 0) / RATE_WINDOW_SECONDS, 1),
            "history": [{"requests": 0, "tokens": 0} for _ in minutes],
        }
    index = {minute: i for i, minute in enumerate(minutes)}
    per_minute = (
        served.annotate(minute=TruncMinute("created_at", tzinfo=UTC))
        .values("worker", "minute")
        .annotate(requests=Count("id"), tokens=Sum("completion_tokens"))
    )
    for row in per_minute:
        i = index.get(row["minute"].astimezone(UTC))
        if i is not None and row["worker"] in result:
            result[row["worker"]]["history"][i] = {"requests": row["requests"], "tokens": row["tokens"] or 0}
    for figures in result.values():
        top = max(max(minute["tokens"] for minute in figures["history"]), 1)
        for minute in figures["history"]:
            level = round(SPARK_LEVELS * minute["tokens"] / top)
            # A minute with requests but no tokens (errors, embeddings) still shows as a sliver.
            minute["level"] = max(level, 1) if minute["requests"] else level
            minute["y"] = SPARK_LEVELS - minute["level"]
    return result


# --- Hints: requests wait while a node with room idles ---------------------------------------


def fleet_hints(nodes: list[dict], queues: list[dict]) -> list[dict]:
    """For each deployment with requests waiting: the online nodes of its engine that have free
    slots and GPU memory for another replica of it but serve none, i.e. capacity that sits idle
    while requests queue. Scaling the deployment up places the new replica there (placement
    prefers nodes without a replica of the deployment). Each hint: deployment, node, waiting,
    need_gb, free_gb and a sentence."""
    from deployments.placement import NodeCapacity, replica_memory_gb

    waiting = {queue["deployment"]: queue["waiting"] for queue in queues if queue["waiting"] > 0}
    if not waiting:
        return []
    idle = {
        n["id"]: n
        for n in nodes
        if n["status"] == WorkerNode.Status.ONLINE and not n["credential_revoked"] and n["in_flight"] < n["slots"]
    }
    if not idle:
        return []
    workers = WorkerNode.objects.filter(pk__in=idle).prefetch_related("replicas")
    capacities = [NodeCapacity.of(node, list(node.replicas.all())) for node in workers]
    hints = []
    for deployment in Deployment.objects.filter(name__in=waiting).select_related("model").order_by("name"):
        need = replica_memory_gb(deployment)
        for capacity in capacities:
            node = capacity.node
            if node.engine != deployment.engine or deployment.pk in capacity.deployments:
                continue
            if capacity.fit(need, spread=False) is None:
                continue
            free = round(max(capacity.total_free, 0), 1)
            count = waiting[deployment.name]
            hints.append(
                {
                    "deployment": deployment.name,
                    "node": node.name,
                    "waiting": count,
                    "need_gb": need,
                    "free_gb": free,
                    "message": (
                        f"{count} request{'s' if count != 1 else ''} wait for {deployment.name} while "
                        f"{node.name} has free slots and {free:g} GB of free GPU memory (a replica needs "
                        f"{need:g} GB) but serves none of it: scale {deployment.name} up to use it."
                    ),
                }
            )
    return hints

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
        "gpus": telemetry.get("gpus") or node.gpus,
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


def fleet_snapshot(user=None) -> dict:
    nodes = visible_nodes(user) if user is not None else WorkerNode.objects.all()
    summaries = [node_summary(n) for n in nodes.exclude(status=WorkerNode.Status.LEFT)]
    return {"nodes": summaries, "queues": queue_depths()}

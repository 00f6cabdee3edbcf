"""The GPU fleet: join tokens, node registration and credentials, heartbeats, assignments."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from deployments import placement
from deployments.models import JoinToken, Replica, WorkerNode
from deployments.presence import worker_gone, worker_seen
from gpucloud.credentials import matches, new_credential, split_credential

JOIN_TOKEN_KIND = "gpcj"
NODE_CREDENTIAL_KIND = "gpcn"


class Refused(Exception):
    """A join token or node credential that is not (or no longer) valid; the message says why."""


def join_token_create(*, name: str, created_by=None) -> tuple[JoinToken, str]:
    credential = new_credential(JOIN_TOKEN_KIND)
    token = JoinToken.objects.create(
        name=name.strip() or "Join token",
        prefix=credential.prefix,
        hashed_token=credential.hashed,
        created_by=created_by,
    )
    return token, credential.plaintext


def join_token_revoke(*, token: JoinToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def _find(model, kind: str, plaintext: str, prefix_field: str, hash_field: str):
    prefix = split_credential(kind, plaintext)
    row = model.objects.filter(**{prefix_field: prefix}).first() if prefix else None
    if row is None or not matches(plaintext, getattr(row, hash_field)):
        return None
    return row


@transaction.atomic
def node_register(
    *, token: str, name: str, host: str, engine: str, slots: int, gpus: list[dict]
) -> tuple[WorkerNode, str]:
    """Register a node with a join token; returns the node and its own credential (shown once)."""
    join_token = _find(JoinToken, JOIN_TOKEN_KIND, token, "prefix", "hashed_token")
    if join_token is None:
        raise Refused("This join token is not valid. Ask the operator for a join token (manage.py createjointoken).")
    if not join_token.is_active:
        raise Refused("This join token has been revoked. Ask the operator for a new one.")
    credential = new_credential(NODE_CREDENTIAL_KIND)
    node = WorkerNode.objects.create(
        name=f"pending-{credential.prefix}",
        host=host,
        engine=engine,
        slots=slots,
        gpus=gpus,
        join_token=join_token,
        credential_prefix=credential.prefix,
        hashed_credential=credential.hashed,
    )
    # Unique and recognisable; it is also the Celery worker's name, which usage records show.
    node.name = f"{name}-{node.pk}"
    node.save(update_fields=["name"])
    return node, credential.plaintext


def node_authenticate(credential: str) -> WorkerNode:
    node = _find(WorkerNode, NODE_CREDENTIAL_KIND, credential, "credential_prefix", "hashed_credential")
    if node is None:
        raise Refused("Unknown node credential. Join again with a join token.")
    if node.credential_revoked_at is not None:
        raise Refused("This node's credential has been revoked by an operator.")
    return node


def node_credential_revoke(*, node: WorkerNode) -> None:
    WorkerNode.objects.filter(pk=node.pk, credential_revoked_at__isnull=True).update(
        credential_revoked_at=timezone.now()
    )


def node_assignment(node: WorkerNode) -> list[dict]:
    """The replicas a node should run, with what its worker needs to load and serve them."""
    replicas = Replica.objects.filter(node=node).select_related("deployment__model").order_by("pk")
    return [
        {
            "id": replica.pk,
            "deployment": replica.deployment.name,
            "queue": replica.deployment.queue_name,
            "model": replica.deployment.model.model_id,
            "engine": replica.deployment.engine,
            "engine_config": replica.deployment.engine_config,
            "gpus": replica.gpu_indices,
        }
        for replica in replicas
    ]


def _record_replica_states(node: WorkerNode, reported: dict) -> bool:
    """Apply the node's report of its replicas' states; returns whether anything changed."""
    changed = False
    for replica in Replica.objects.filter(node=node, pk__in=[int(pk) for pk in reported if str(pk).isdigit()]):
        report = reported[str(replica.pk)]
        if not isinstance(report, dict):
            continue
        state, reason = report.get("state"), str(report.get("reason", ""))[:300]
        if state in Replica.State.values and (state, reason) != (replica.state, replica.reason):
            Replica.objects.filter(pk=replica.pk).update(state=state, reason=reason)
            changed = True
    return changed


def node_heartbeat(node_id: int, telemetry: dict) -> list[dict]:
    """Record a heartbeat; returns the node's assignment. Raises Refused if it may no longer serve."""
    node = WorkerNode.objects.filter(pk=node_id).first()
    if node is None or node.credential_revoked_at is not None:
        raise Refused("This node's credential has been revoked by an operator.")
    status = WorkerNode.Status.DRAINING if telemetry.get("draining") else WorkerNode.Status.ONLINE
    WorkerNode.objects.filter(pk=node_id).update(status=status, last_heartbeat_at=timezone.now(), telemetry=telemetry)
    worker_seen(node.name)
    if _record_replica_states(node, telemetry.get("replicas") or {}) or node.status != status:
        placement.reconcile()
    else:
        placement.reconcile_soon()
    return node_assignment(node)


def node_disconnected(node_id: int, *, left: bool) -> None:
    node = WorkerNode.objects.filter(pk=node_id).first()
    if node is None:
        return
    worker_gone(node.name)
    status = WorkerNode.Status.LEFT if left else WorkerNode.Status.OFFLINE
    WorkerNode.objects.filter(pk=node_id).update(status=status)
    placement.reconcile()  # its replicas go elsewhere

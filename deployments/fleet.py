"""The GPU fleet: join tokens, node registration and credentials, heartbeats, assignments."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deployments.models import Deployment, JoinToken, WorkerNode
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


def node_assignment(node: WorkerNode) -> list[str]:
    """The queues a node should consume: every running deployment on its engine."""
    deployments = Deployment.objects.filter(status=Deployment.Status.RUNNING, engine=node.engine)
    return sorted(d.queue_name for d in deployments)


def node_heartbeat(node_id: int, telemetry: dict) -> list[str]:
    """Record a heartbeat; returns the node's assignment. Raises Refused if it may no longer serve."""
    node = WorkerNode.objects.filter(pk=node_id).first()
    if node is None or node.credential_revoked_at is not None:
        raise Refused("This node's credential has been revoked by an operator.")
    status = WorkerNode.Status.DRAINING if telemetry.get("draining") else WorkerNode.Status.ONLINE
    WorkerNode.objects.filter(pk=node_id).update(status=status, last_heartbeat_at=timezone.now(), telemetry=telemetry)
    worker_seen(node.name)
    return node_assignment(node)


def node_disconnected(node_id: int, *, left: bool) -> None:
    node = WorkerNode.objects.filter(pk=node_id).first()
    if node is None:
        return
    worker_gone(node.name)
    status = WorkerNode.Status.LEFT if left else WorkerNode.Status.OFFLINE
    WorkerNode.objects.filter(pk=node_id).update(status=status)


def node_effective_status(node: WorkerNode) -> str:
    """The stored status, except that a node silent for too long is offline whatever it last said."""
    if node.status in (WorkerNode.Status.ONLINE, WorkerNode.Status.DRAINING):
        stale = node.last_heartbeat_at is None or (
            (timezone.now() - node.last_heartbeat_at).total_seconds() > settings.WORKER_OFFLINE_AFTER
        )
        if stale:
            return WorkerNode.Status.OFFLINE
    return node.status

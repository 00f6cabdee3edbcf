"""The GPU fleet: join tokens, node registration and credentials, heartbeats, assignments."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from deployments import placement, reliability
from deployments.models import JoinToken, Replica, Trust, WorkerNode
from deployments.presence import worker_gone
from gpucloud.credentials import matches, new_credential, split_credential
from nodeprotocol import version_refusal

logger = logging.getLogger(__name__)

JOIN_TOKEN_KIND = "gpcj"
NODE_CREDENTIAL_KIND = "gpcn"


class Refused(Exception):
    """A join token or node credential that is not (or no longer) valid; the message says why."""


class UnknownCredential(Refused):
    """A credential this platform never issued (or forgot): the node may join again with a token."""


class ProtocolMismatch(Refused):
    """The node speaks another version of the node protocol; the message names both."""


def node_group(node_id: int) -> str:
    """The Channels group of a node's live session (at most one socket per node)."""
    return f"fleet.node.{node_id}"


def check_protocol(version: object) -> None:
    refusal = version_refusal(version)
    if refusal is not None:
        raise ProtocolMismatch(refusal)


def join_token_create(
    *, name: str, created_by=None, trust: str = Trust.TRUSTED, expires_at=None, max_uses: int | None = None
) -> tuple[JoinToken, str]:
    """A join token (plaintext returned, shown once). Its nodes get ``trust``; a community token's
    nodes belong to ``created_by``. ``expires_at`` and ``max_uses`` (None: no limit) bound its use."""
    credential = new_credential(JOIN_TOKEN_KIND)
    token = JoinToken.objects.create(
        name=name.strip() or "Join token",
        trust=trust,
        expires_at=expires_at,
        max_uses=max_uses,
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


def node_register(
    *, token: str, name: str, host: str, engine: str, slots: int, gpus: list[dict], protocol: object = None
) -> tuple[WorkerNode, str]:
    """Register a node with a join token; returns the node and its own credential (shown once)."""
    check_protocol(protocol)
    # Checked before any write, so that a flood of bad tokens never takes the database's write lock.
    join_token = _find(JoinToken, JOIN_TOKEN_KIND, token, "prefix", "hashed_token")
    if join_token is None:
        raise Refused("This join token is not valid. Ask the operator for a join token (manage.py createjointoken).")
    if not join_token.is_active:
        raise Refused("This join token has been revoked. Ask the operator for a new one.")
    if join_token.expires_at is not None and join_token.expires_at <= timezone.now():
        raise Refused("This join token has expired. Create a new one (Host page, or manage.py createjointoken).")
    return _node_create(join_token, name=name, host=host, engine=engine, slots=slots, gpus=gpus)


@transaction.atomic
def _node_create(join_token: JoinToken, *, name: str, host: str, engine: str, slots: int, gpus: list[dict]):
    # One use claimed in one UPDATE, in the node's transaction: concurrent registrations can never
    # take a token past its use limit or its expiry, and a failed registration gives its use back.
    claimed = (
        JoinToken.objects.filter(pk=join_token.pk, revoked_at__isnull=True)
        .filter(Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .update(uses=F("uses") + 1)
    )
    if not claimed:
        raise Refused(
            "This join token has been used as many times as it allows (or expired or was revoked just now). "
            "Create a new one."
        )
    credential = new_credential(NODE_CREDENTIAL_KIND)
    node = WorkerNode.objects.create(
        name=f"pending-{credential.prefix}",
        host=host,
        engine=engine,
        slots=slots,
        gpus=gpus,
        join_token=join_token,
        trust=join_token.trust,
        owner=join_token.created_by if join_token.trust == Trust.COMMUNITY else None,
        credential_prefix=credential.prefix,
        hashed_credential=credential.hashed,
    )
    # Unique and recognisable: usage records and the fleet pages show it.
    node.name = f"{name}-{node.pk}"
    node.save(update_fields=["name"])
    return node, credential.plaintext


def node_authenticate(credential: str) -> WorkerNode:
    node = _find(WorkerNode, NODE_CREDENTIAL_KIND, credential, "credential_prefix", "hashed_credential")
    if node is None:
        raise UnknownCredential("Unknown node credential. Join again with a join token.")
    if node.credential_revoked_at is not None:
        raise Refused("This node's credential has been revoked by an operator.")
    return node


def node_credential_revoke(*, node: WorkerNode) -> None:
    """Revoke a node's credential: its socket is closed at once (its jobs go elsewhere), and it
    can never connect again."""
    revoked = WorkerNode.objects.filter(pk=node.pk, credential_revoked_at__isnull=True).update(
        credential_revoked_at=timezone.now()
    )
    if revoked:
        transaction.on_commit(lambda: _close_session(node.pk))


def _close_session(node_id: int) -> None:
    async_to_sync(get_channel_layer().group_send)(node_group(node_id), {"type": "node.revoked"})


# Never sent to a node: secrets belong in the node's own environment (engine_config.api_key_env).
SECRET_CONFIG_KEYS = frozenset({"api_key"})


def node_assignment(node: WorkerNode) -> list[dict]:
    """The replicas a node should run, with what it needs to load and serve them (no secrets)."""
    replicas = Replica.objects.filter(node=node).select_related("deployment__model").order_by("pk")
    return [
        {
            "id": replica.pk,
            "deployment": replica.deployment.name,
            "queue": replica.deployment.queue_name,
            "model": replica.deployment.model.model_id,
            "engine": replica.deployment.engine,
            "engine_config": {
                k: v for k, v in (replica.deployment.engine_config or {}).items() if k not in SECRET_CONFIG_KEYS
            },
            "gpus": replica.gpu_indices,
            # The GPU memory placement gave it: a simulated node reports it as used while loaded.
            "memory_gb": float(replica.memory_gb),
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


def serving_queues(assignment: list[dict], reported: dict) -> dict[str, int]:
    """The queues a node serves: those of its placed replicas that it reports loaded -> replica id."""
    return {
        spec["queue"]: spec["id"]
        for spec in assignment
        if isinstance(reported.get(str(spec["id"])), dict) and reported[str(spec["id"])].get("state") == "running"
    }


MAX_SLOTS, MAX_REPLICAS, MAX_GPUS = 1024, 256, 64
GPU_FIELDS = frozenset(
    {"index", "name", "utilization", "memory_used_mb", "memory_total_mb", "temperature_c", "simulated"}
)


def clean_heartbeat(message: dict) -> dict:
    """A node's heartbeat reduced to known fields of known types and bounded sizes."""
    slots = message.get("slots")
    replicas = message.get("replicas")
    gpus = message.get("gpus")
    in_flight = message.get("in_flight")
    busy = message.get("busy")
    return {
        "slots": slots if isinstance(slots, int) and not isinstance(slots, bool) and 1 <= slots <= MAX_SLOTS else 1,
        "in_flight": in_flight if isinstance(in_flight, int) and 0 <= in_flight <= MAX_SLOTS else 0,
        "draining": message.get("draining") is True,
        # Jobs in flight per queue (the server's count, like in_flight): utilisation for autoscaling and prices.
        "busy": {
            str(queue)[:200]: count
            for queue, count in list(busy.items())[:MAX_REPLICAS]
            if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_SLOTS
        }
        if isinstance(busy, dict)
        else {},
        "replicas": {
            str(k)[:20]: {"state": str(v.get("state"))[:20], "reason": str(v.get("reason", ""))[:300]}
            for k, v in list(replicas.items())[:MAX_REPLICAS]
            if isinstance(v, dict)
        }
        if isinstance(replicas, dict)
        else {},
        "gpus": [
            {k: v for k, v in g.items() if k in GPU_FIELDS and isinstance(v, str | int | float | bool)}
            for g in gpus[:MAX_GPUS]
            if isinstance(g, dict)
        ]
        if isinstance(gpus, list)
        else [],
    }


def node_heartbeat(node_id: int, message: dict) -> tuple[list[dict], dict[str, int]]:
    """Record a heartbeat; returns the node's assignment and the queues it serves (queue -> replica).

    Raises Refused if it may no longer serve.
    """
    node = WorkerNode.objects.filter(pk=node_id).first()
    if node is None or node.credential_revoked_at is not None:
        raise Refused("This node's credential has been revoked by an operator.")
    telemetry = clean_heartbeat(message)
    status = WorkerNode.Status.DRAINING if telemetry["draining"] else WorkerNode.Status.ONLINE
    # One write in the steady state, before placement runs (which must see the node fresh): the
    # heartbeat, with the queues the platform pulls for the node as they were (as the fleet pages
    # show them), written again only if placement changed them. Under load every write waits for
    # the database's write lock.
    now = timezone.now()
    queues = node.telemetry.get("queues", []) if isinstance(node.telemetry, dict) else []
    WorkerNode.objects.filter(pk=node_id).update(
        status=status, last_heartbeat_at=now, telemetry={**telemetry, "queues": queues}, slots=telemetry["slots"]
    )
    changed = _record_replica_states(node, telemetry["replicas"]) or node.status != status
    try:
        # (Its presence in Redis is kept by its session's dispatcher, from the event loop.)
        # Uptime history for its reliability: a Redis counter, added to the database in batches.
        reliability.record(node.name, {reliability.ONLINE: reliability.online_seconds(node.last_heartbeat_at, now)})
        placement.reconcile() if changed else placement.reconcile_soon()
    except RedisError as error:
        # Redis is down: the heartbeat is on record in the database (so the node stays online and
        # keeps its replicas), and placement runs again with the next heartbeat after Redis is back.
        logger.warning("Heartbeat of %s recorded without placement: %s", node.name, error)
    assignment = node_assignment(node)
    serving = serving_queues(assignment, telemetry["replicas"]) if status == WorkerNode.Status.ONLINE else {}
    if sorted(serving) != queues:
        WorkerNode.objects.filter(pk=node_id).update(telemetry={**telemetry, "queues": sorted(serving)})
    return assignment, serving


def node_disconnected(node_id: int, *, left: bool) -> None:
    node = WorkerNode.objects.filter(pk=node_id).first()
    if node is None:
        return
    status = WorkerNode.Status.LEFT if left else WorkerNode.Status.OFFLINE
    WorkerNode.objects.filter(pk=node_id).update(status=status)
    try:
        worker_gone(node.name)
        placement.reconcile()  # its replicas go elsewhere
    except RedisError as error:  # the next reconcile, after Redis is back, moves them
        logger.warning("Node %s left while Redis is unreachable: %s", node.name, error)

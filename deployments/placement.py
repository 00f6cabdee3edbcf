"""Placement: put each deployment's replicas on GPU nodes, and keep its status true.

:func:`reconcile` is the one place that moves replicas. It runs when an operator changes a
deployment, when a node joins, leaves or reports a replica's state, and at most once a second
from the heartbeats (which is how a node that went silent loses its replicas). It is
idempotent, and a Redis lock makes it run one at a time across every server process.

Rules:

* A replica needs ``Deployment.memory_gb`` of GPU memory (the catalog's figure for the
  deployment's precision, else an estimate from the parameter count) on one node whose engine
  is the deployment's: one GPU if one fits, otherwise several GPUs of that node together.
  An ``openai`` replica needs none of ours (the upstream server owns its memory), and a node
  without GPUs runs replicas on its CPU.
* ``binpack`` (default) picks the node left with the least free memory; ``spread`` the most.
  Replicas of one deployment prefer nodes that have none of it yet, then the deployment's GPU
  type preference; two that had to share a node move apart once another node has room.
* Reliable nodes come before others (``WorkerNode.reliability``), and a node below
  ``RELIABILITY_MIN_SCORE`` gets no new replicas (it keeps those it has).
* A replica on a node that is offline, draining, left or revoked is removed and placed again.
* Status: ``scheduling`` while some replica has no node (with the reason), ``starting`` until
  every replica reports loaded, ``running`` when all do, ``failed`` when a replica failed to
  load (with its reason), ``stopping`` → ``stopped`` when an operator stops it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction
from redis.exceptions import RedisError

from deployments.models import Deployment, Engine, Replica, WorkerNode
from deployments.presence import heartbeats_interrupted, live_workers
from deployments.reliability import reliable
from gpucloud.redis_client import get_redis

logger = logging.getLogger(__name__)

# Bytes per parameter by precision, with ~20% on top for the KV cache and activations.
ESTIMATED_GB_PER_BILLION = {"fp16": 2.4, "int8": 1.2, "int4": 0.7}
LOCK_KEY = "gpucloud:placement"
THROTTLE_KEY = "gpucloud:placement:recent"


def replica_memory_gb(deployment: Deployment) -> float:
    if deployment.engine == Engine.OPENAI:
        return 0.0
    known = deployment.memory_gb
    if known is not None:
        return known
    return round(float(deployment.model.parameters_billion) * ESTIMATED_GB_PER_BILLION[deployment.precision], 1)


@dataclass
class NodeCapacity:
    node: WorkerNode
    free_gb: dict[int, float]  # per GPU index
    deployments: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, node: WorkerNode, replicas: list[Replica]) -> NodeCapacity:
        free = {gpu["index"]: gpu["memory_total_mb"] / 1024 for gpu in node.gpus}
        capacity = cls(node=node, free_gb=free)
        for replica in replicas:
            capacity.take(replica.deployment_id, replica.gpu_indices, replica.memory_gb)
        return capacity

    @property
    def total_free(self) -> float:
        return sum(self.free_gb.values())

    def take(self, deployment_id: int, gpus: list[int], memory_gb: float) -> None:
        self.deployments.add(deployment_id)
        for index in gpus:
            self.free_gb[index] = self.free_gb.get(index, 0) - memory_gb / len(gpus)

    def release(self, gpus: list[int], memory_gb: float) -> None:
        for index in gpus:
            self.free_gb[index] = self.free_gb.get(index, 0) + memory_gb / len(gpus)

    def fit(self, need_gb: float, spread: bool) -> list[int] | None:
        """GPU indices that can hold ``need_gb``: one GPU if possible, else several; None if not."""
        if not self.free_gb or need_gb == 0:
            return []  # a CPU node, or a replica that needs none of our memory
        singles = [i for i, free in self.free_gb.items() if free >= need_gb]
        if singles:
            choose = max if spread else min
            return [choose(singles, key=lambda i: self.free_gb[i])]
        chosen, total = [], 0.0
        for index in sorted(self.free_gb, key=lambda i: -self.free_gb[i]):
            chosen.append(index)
            total += max(self.free_gb[index], 0)
            if total >= need_gb:
                return sorted(chosen)
        return None


def _eligible(node: WorkerNode, present: set[str]) -> bool:
    """Online, not revoked, and alive: heard from lately by the web process holding its socket
    (``present``, kept from the event loop), or by its last heartbeat on record, whichever is
    fresher. Under load a heartbeat's database write lags; the node is no less alive for it."""
    if node.credential_revoked_at is not None or node.status != WorkerNode.Status.ONLINE:
        return False
    return node.name in present or node.effective_status == WorkerNode.Status.ONLINE


def _present() -> set[str]:
    try:
        return set(live_workers())
    except RedisError:  # (reconcile takes a Redis lock first, so this is a moment's outage)
        return set()


def _choose(deployment: Deployment, need_gb: float, capacities: list[NodeCapacity]):
    spread = deployment.placement == Deployment.Placement.SPREAD
    options = []
    for capacity in capacities:
        if capacity.node.engine != deployment.engine or not reliable(capacity.node):
            continue
        gpus = capacity.fit(need_gb, spread)
        if gpus is None:
            continue
        left = capacity.total_free - need_gb
        preferred_type = not deployment.gpu_profile or any(
            gpu["name"] == deployment.gpu_profile for gpu in capacity.node.gpus
        )
        # Reliable nodes first (in steps of 0.1, so that small differences leave binpack/spread to decide).
        key = (
            deployment.pk in capacity.deployments,
            not preferred_type,
            -round(capacity.node.reliability, 1),
            -left if spread else left,
        )
        options.append((key, capacity, gpus))
    if not options:
        return None, None
    _, capacity, gpus = min(options, key=lambda option: option[0])
    return capacity, gpus


def _status(deployment: Deployment, replicas: list[Replica], unplaced_reason: str) -> tuple[str, str]:
    failed = [r for r in replicas if r.state == Replica.State.FAILED]
    running = [r for r in replicas if r.state == Replica.State.RUNNING]
    if failed:
        return Deployment.Status.FAILED, f"Replica on {failed[0].node.name} failed: {failed[0].reason}"
    if unplaced_reason:
        return Deployment.Status.SCHEDULING, unplaced_reason
    if len(running) == deployment.replicas:
        return Deployment.Status.RUNNING, ""
    return Deployment.Status.STARTING, f"{len(running)} of {deployment.replicas} replicas loaded"


def _reconcile_locked() -> None:
    nodes = list(WorkerNode.objects.exclude(status=WorkerNode.Status.LEFT))
    present = _present()
    eligible = {node.pk: node for node in nodes if _eligible(node, present)}
    replicas = list(Replica.objects.select_related("node", "deployment"))

    # Replicas on nodes that cannot serve them any more are placed again. While heartbeats could
    # not be recorded (the database was unreachable), a node's silence proves nothing: only nodes
    # that left, disconnected or were revoked lose their replicas then.
    keep = set()
    if heartbeats_interrupted():
        keep = {n.pk for n in nodes if n.credential_revoked_at is None and n.status == WorkerNode.Status.ONLINE}
    lost = [r.pk for r in replicas if r.node_id not in eligible and r.node_id not in keep]
    for gone in {r.node for r in replicas if r.pk in lost}:
        logger.warning(
            "Node %s (%s, last heartbeat on record %s, %s) loses its replicas",
            gone.name,
            gone.status,
            gone.last_heartbeat_at,
            "heard lately by its socket" if gone.name in present else "not heard lately by its socket",
        )
    if lost:
        Replica.objects.filter(pk__in=lost).delete()
        replicas = [r for r in replicas if r.pk not in lost]

    capacities = {pk: NodeCapacity.of(node, [r for r in replicas if r.node_id == pk]) for pk, node in eligible.items()}
    for deployment in Deployment.objects.select_related("model").order_by("created_at", "pk"):
        own = [r for r in replicas if r.deployment_id == deployment.pk]
        if deployment.status in (Deployment.Status.STOPPING, Deployment.Status.STOPPED):
            Replica.objects.filter(deployment=deployment).delete()
            _save_status(deployment, Deployment.Status.STOPPED, "")
            continue
        # Scale down: drop replicas that are not serving first, then the newest.
        excess = len(own) - deployment.replicas
        if excess > 0:
            doomed = sorted(own, key=lambda r: (r.state == Replica.State.RUNNING, r.pk))[:excess]
            Replica.objects.filter(pk__in=[r.pk for r in doomed]).delete()
            own = [r for r in own if r not in doomed]
        need = replica_memory_gb(deployment)
        own = _spread_out(deployment, own, need, capacities)
        unplaced_reason = ""
        while len(own) < deployment.replicas:
            capacity, gpus = _choose(deployment, need, list(capacities.values()))
            if capacity is None:
                unplaced_reason = (
                    f"{len(own)} of {deployment.replicas} replicas placed: no online '{deployment.engine}' node "
                    f"has {need:g} GB of free GPU memory for {deployment.model.model_id} at {deployment.precision}."
                ) + _unreliable_note(deployment, capacities)
                break
            replica = Replica.objects.create(
                deployment=deployment, node=capacity.node, gpu_indices=gpus, memory_gb=need
            )
            replica.node = capacity.node
            capacity.take(deployment.pk, gpus, need)
            own.append(replica)
        _save_status(deployment, *_status(deployment, own, unplaced_reason))


def _unreliable_note(deployment: Deployment, capacities: dict) -> str:
    """Why a node that looks free took nothing: it is below the reliability minimum."""
    count = sum(c.node.engine == deployment.engine and not reliable(c.node) for c in capacities.values())
    return f" ({count} online node(s) below the reliability minimum take no new replicas.)" if count else ""


def _spread_out(deployment: Deployment, own: list[Replica], need: float, capacities: dict) -> list[Replica]:
    """Replicas placed together while no other node could take them move once one can: two
    replicas of a deployment share a node only when no other node has room."""
    spread = deployment.placement == Deployment.Placement.SPREAD
    for replica in sorted(own, key=lambda r: -r.pk):
        if replica.node_id not in capacities or sum(r.node_id == replica.node_id for r in own) < 2:
            continue
        room = any(
            capacity.node.engine == deployment.engine
            and reliable(capacity.node)
            and deployment.pk not in capacity.deployments
            and capacity.fit(need, spread) is not None
            for capacity in capacities.values()
        )
        if not room:
            break
        Replica.objects.filter(pk=replica.pk).delete()
        capacities[replica.node_id].release(replica.gpu_indices, replica.memory_gb)
        own = [r for r in own if r.pk != replica.pk]
    return own


def _save_status(deployment: Deployment, status: str, reason: str) -> None:
    if (deployment.status, deployment.status_reason) != (status, reason[:300]):
        logger.info("Deployment %s: %s %s", deployment.name, status, reason)
        Deployment.objects.filter(pk=deployment.pk).update(status=status, status_reason=reason[:300])
        deployment.status, deployment.status_reason = status, reason[:300]


def reconcile() -> None:
    """Bring every deployment's replicas and status in line with the fleet (serialised by a lock)."""
    with get_redis().lock(LOCK_KEY, timeout=30, blocking_timeout=30), transaction.atomic():
        _reconcile_locked()


def reconcile_soon() -> None:
    """Reconcile unless it ran within the last second (called on every heartbeat)."""
    if get_redis().set(THROTTLE_KEY, 1, nx=True, px=1000):
        reconcile()

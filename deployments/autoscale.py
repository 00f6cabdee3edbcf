"""Autoscaling: a deployment with ``max_replicas`` moves its replica count with its queue.

* **Up**, one replica at a time, while its oldest waiting request has waited longer than
  ``AUTOSCALE_QUEUE_WAIT_TARGET`` seconds, every replica it has is loaded (the last one added is
  already helping), it is below ``max_replicas``, and some node can take another replica: an
  online, reliable node of its engine with none of it yet and the GPU memory for one. A second
  replica on a node that has one already would add no slots, so that does not count.
* **Down**, one at a time, after ``AUTOSCALE_QUIET_SECONDS`` of quiet — nothing waiting, and its
  jobs in flight fit in the other replicas' slots at half occupancy — never below
  ``min_replicas`` (default 1). The clock starts again after each step down.

:func:`decide` holds the rule as a pure function of explicit inputs and ``now``; :func:`autoscale`
(run by :mod:`gpucloud.periodic`) gathers them from the queue, the nodes' heartbeats and placement,
and applies the decision through :func:`deployments.services.deployment_update`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from deployments import services
from deployments.models import Deployment, Replica, WorkerNode
from deployments.placement import NodeCapacity, replica_memory_gb
from deployments.reliability import reliable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Load:
    """What the autoscaler sees of one deployment."""

    replicas: int  # its target now
    min_replicas: int
    max_replicas: int
    all_loaded: bool  # every replica placed and reporting loaded
    oldest_wait: float  # seconds the oldest waiting request has waited (0: none waits)
    waiting: int  # requests waiting
    busy: int  # requests in flight on its replicas
    slots: int  # slots of the nodes its loaded replicas are on
    room_elsewhere: bool  # a node without it could take another replica


@dataclass(frozen=True)
class Decision:
    replicas: int
    quiet_since: datetime | None
    reason: str = ""


def is_quiet(load: Load) -> bool:
    """Nothing waits, and what runs would fit in one replica fewer at half occupancy."""
    if load.waiting:
        return False
    if load.replicas <= 1:
        return True
    rest = load.slots * (load.replicas - 1) / load.replicas
    return load.busy <= rest / 2


def decide(
    load: Load,
    *,
    quiet_since: datetime | None,
    now: datetime,
    target_wait: float | None = None,
    quiet_seconds: float | None = None,
) -> Decision:
    """The replica count a deployment should have now, and since when it has been quiet."""
    target_wait = settings.AUTOSCALE_QUEUE_WAIT_TARGET if target_wait is None else target_wait
    quiet_seconds = settings.AUTOSCALE_QUIET_SECONDS if quiet_seconds is None else quiet_seconds
    low, high = load.min_replicas, max(load.max_replicas, load.min_replicas)
    if not low <= load.replicas <= high:
        bounded = min(max(load.replicas, low), high)
        return Decision(bounded, None, f"kept within {low}-{high} replicas")
    if load.oldest_wait > target_wait:
        if load.replicas < high and load.all_loaded and load.room_elsewhere:
            reason = f"a request waited {load.oldest_wait:.1f}s ({load.waiting} waiting, {load.busy} in flight)"
            return Decision(load.replicas + 1, None, reason)
        return Decision(load.replicas, None)
    if not is_quiet(load):
        return Decision(load.replicas, None)
    since = quiet_since or now
    if load.replicas > low and (now - since).total_seconds() >= quiet_seconds:
        return Decision(load.replicas - 1, now, f"quiet for {(now - since).total_seconds():.0f}s")
    return Decision(load.replicas, since)


def room_elsewhere(deployment: Deployment, nodes: list[WorkerNode], replicas: list[Replica]) -> bool:
    """Whether a node that has no replica of ``deployment`` could take one now."""
    need = replica_memory_gb(deployment)
    spread = deployment.placement == Deployment.Placement.SPREAD
    for node in nodes:
        own = [r for r in replicas if r.node_id == node.pk]
        if (
            node.engine != deployment.engine
            or node.credential_revoked_at is not None
            or node.effective_status != WorkerNode.Status.ONLINE
            or not reliable(node)
            or any(r.deployment_id == deployment.pk for r in own)
        ):
            continue
        if NodeCapacity.of(node, own).fit(need, spread) is not None:
            return True
    return False


def load_of(deployment: Deployment, nodes: list[WorkerNode], replicas: list[Replica], now: datetime) -> Load:
    from inference.jobqueue import oldest_wait, waiting

    own = [r for r in replicas if r.deployment_id == deployment.pk]
    by_pk = {node.pk: node for node in nodes}
    loaded_nodes = {r.node_id for r in own if r.state == Replica.State.RUNNING}
    queue = deployment.queue_name
    busy = sum(int((by_pk[pk].telemetry or {}).get("busy", {}).get(queue, 0)) for pk in loaded_nodes if pk in by_pk)
    return Load(
        replicas=deployment.replicas,
        min_replicas=deployment.min_replicas or 1,
        max_replicas=deployment.max_replicas or deployment.replicas,
        all_loaded=len(own) == deployment.replicas and all(r.state == Replica.State.RUNNING for r in own),
        oldest_wait=oldest_wait(queue, now.timestamp()),
        waiting=waiting(queue),
        busy=busy,
        slots=sum(by_pk[pk].slots for pk in loaded_nodes if pk in by_pk),
        room_elsewhere=room_elsewhere(deployment, nodes, replicas),
    )


def autoscale(now: datetime | None = None) -> list[tuple[str, int, int]]:
    """Scale every autoscaled deployment that is serving or placing replicas (one waiting in
    ``scheduling`` for a replica no node can take comes down when quiet); returns
    ``(name, before, after)`` for each change."""
    now = now or timezone.now()
    active = (Deployment.Status.RUNNING, Deployment.Status.STARTING, Deployment.Status.SCHEDULING)
    deployments = list(Deployment.objects.filter(max_replicas__isnull=False, status__in=active).select_related("model"))
    if not deployments:
        return []
    nodes = list(WorkerNode.objects.exclude(status=WorkerNode.Status.LEFT))
    replicas = list(Replica.objects.all())
    changes = []
    for deployment in deployments:
        decision = decide(load_of(deployment, nodes, replicas, now), quiet_since=deployment.quiet_since, now=now)
        if decision.quiet_since != deployment.quiet_since:
            Deployment.objects.filter(pk=deployment.pk).update(quiet_since=decision.quiet_since)
        if decision.replicas != deployment.replicas:
            logger.info(
                "Autoscaling %s from %d to %d replicas: %s",
                deployment.name,
                deployment.replicas,
                decision.replicas,
                decision.reason,
            )
            changes.append((deployment.name, deployment.replicas, decision.replicas))
            services.deployment_update(deployment=deployment, replicas=decision.replicas)
            replicas = list(Replica.objects.all())
    return changes

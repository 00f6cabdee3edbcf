"""Supply and demand: a model with a :class:`~billing.models.DynamicPrice` costs its catalog prices
times a multiplier between its floor and ceiling, moved by utilisation.

* **Utilisation** of a model, sampled by the periodic work (:mod:`gpucloud.periodic`) every
  ``PERIODIC_INTERVAL``: (requests waiting in its deployments' queues + requests in flight on
  them) / the slots of the nodes serving them. Samples are kept in Redis for
  ``PRICING_WINDOW_SECONDS`` and averaged.
* **The multiplier** (:func:`multiplier_for`, pure): the floor up to ``PRICING_TARGET_UTILISATION``,
  the ceiling at full use (1.0 and above), linear between, in steps of ``PRICING_STEP``.
* **Repricing** (:func:`reprice`), at most every ``PRICING_INTERVAL`` per model: a multiplier that
  changed becomes a new :class:`~billing.models.PriceVersion` (billing.services.price_version_record).
  Admission reserves at the version in force and settlement charges at the version the
  reservation names, so a request pays the price it was admitted at.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.utils import timezone

from billing import services
from billing.models import DynamicPrice, PriceVersion

logger = logging.getLogger(__name__)


def _samples_key(model_pk: int) -> str:
    return f"gpucloud:utilisation:{model_pk}"


def utilisation(*, waiting: int, busy: int, slots: int) -> float | None:
    """Demand against capacity (None: no capacity to measure against)."""
    if slots <= 0:
        return None
    return (waiting + busy) / slots


def multiplier_for(
    mean_utilisation: float,
    *,
    floor: Decimal,
    ceiling: Decimal,
    target: float | None = None,
    step: Decimal | None = None,
) -> Decimal:
    """The multiplier for a mean utilisation: ``floor`` up to ``target``, ``ceiling`` at 1.0 and
    above, linear between, rounded to ``step`` and kept within the bounds."""
    target = settings.PRICING_TARGET_UTILISATION if target is None else target
    step = Decimal(settings.PRICING_STEP) if step is None else Decimal(step)
    share = 1.0 if target >= 1 else (mean_utilisation - target) / (1 - target)
    if share <= 0:
        return floor.quantize(Decimal("0.001"), ROUND_HALF_UP)
    if share >= 1:
        return ceiling.quantize(Decimal("0.001"), ROUND_HALF_UP)
    raw = floor + (ceiling - floor) * Decimal(str(round(share, 6)))
    stepped = (raw / step).quantize(Decimal(1), ROUND_HALF_UP) * step if step > 0 else raw
    return min(max(stepped, floor), ceiling).quantize(Decimal("0.001"), ROUND_HALF_UP)


def _model_load(model_pk: int, nodes: list, deployments: list) -> tuple[int, int, int]:
    from inference.jobqueue import waiting

    queues = [d.queue_name for d in deployments if d.model_id == model_pk]
    waiting_total = sum(waiting(queue) for queue in queues)
    busy = slots = 0
    for node in nodes:
        telemetry = node.telemetry or {}
        served = [q for q in queues if q in telemetry.get("queues", [])]
        if served:
            slots += node.slots
            busy += sum(int(telemetry.get("busy", {}).get(q, 0)) for q in served)
    return waiting_total, busy, slots


def sample_utilisation(now: datetime | None = None) -> dict[int, float]:
    """Record each dynamically priced model's utilisation now; returns ``{model pk: utilisation}``."""
    from deployments.models import Deployment, WorkerNode
    from gpucloud.redis_client import get_redis

    now = now or timezone.now()
    priced = list(DynamicPrice.objects.filter(enabled=True).values_list("model_id", flat=True))
    if not priced:
        return {}
    deployments = list(
        Deployment.objects.filter(model_id__in=priced).exclude(
            status__in=[Deployment.Status.STOPPED, Deployment.Status.STOPPING]
        )
    )
    nodes = [n for n in WorkerNode.objects.exclude(status=WorkerNode.Status.LEFT) if n.effective_status == "online"]
    sampled = {}
    pipe = get_redis().pipeline(transaction=False)
    stamp = now.timestamp()
    for model_pk in priced:
        waiting, busy, slots = _model_load(model_pk, nodes, deployments)
        value = utilisation(waiting=waiting, busy=busy, slots=slots)
        if value is None:
            continue
        sampled[model_pk] = value
        key = _samples_key(model_pk)
        pipe.zadd(key, {f"{stamp:.3f}:{value:.4f}": stamp})
        pipe.zremrangebyscore(key, "-inf", stamp - settings.PRICING_WINDOW_SECONDS)
        pipe.expire(key, int(settings.PRICING_WINDOW_SECONDS) + 60)
    pipe.execute()
    return sampled


def mean_utilisation(model_pk: int, now: datetime | None = None) -> float | None:
    """The mean of a model's samples over the last ``PRICING_WINDOW_SECONDS`` (None: none)."""
    from gpucloud.redis_client import get_redis

    stamp = (now or timezone.now()).timestamp()
    members = get_redis().zrangebyscore(_samples_key(model_pk), stamp - settings.PRICING_WINDOW_SECONDS, stamp)
    values = [float(member.decode().rsplit(":", 1)[1]) for member in members]
    return sum(values) / len(values) if values else None


def reprice(now: datetime | None = None) -> list[PriceVersion]:
    """Move each dynamically priced model's multiplier with its utilisation; returns new versions."""
    now = now or timezone.now()
    created = []
    for dynamic in DynamicPrice.objects.select_related("model"):
        current = PriceVersion.objects.filter(model=dynamic.model).order_by("-effective_from", "-id").first()
        if not dynamic.enabled:
            if current is not None and current.multiplier != 1:  # back to the catalog's prices
                created.append(services.price_version_record(dynamic.model, Decimal("1")))
            continue
        due = dynamic.repriced_at is None or (now - dynamic.repriced_at).total_seconds() >= settings.PRICING_INTERVAL
        mean = mean_utilisation(dynamic.model_id, now) if due else None
        if mean is None:
            continue
        multiplier = multiplier_for(mean, floor=dynamic.floor, ceiling=dynamic.ceiling)
        version = services.price_version_record(dynamic.model, multiplier)
        if current is None or version.pk != current.pk:
            logger.info("Price of %s now x%s (utilisation %.2f)", dynamic.model, multiplier, mean)
            created.append(version)
        DynamicPrice.objects.filter(pk=dynamic.pk).update(repriced_at=now)
    return created

"""Node reliability: history per node and hour, and a score from 0 to 1 that placement uses.

What counts, over the last ``RELIABILITY_WINDOW_DAYS``:

* **uptime** — seconds online. Each heartbeat adds the time since the node's previous one (at most
  ``WORKER_OFFLINE_AFTER``: a longer silence was downtime). It is measured against the time the
  fleet was observed at all (per hour, the most any node was online): a platform that was itself
  down penalises nobody, and a new node starts with an hour of credit (``PRIOR_SECONDS``);
* **jobs lost** (its connection closed or its lease lapsed with the job unfinished: the view that
  dispatches the request again counts it, :mod:`inference.transport`) and **jobs failed** (the node
  answered a server error, or broke the protocol: :mod:`inference.dispatcher`), against jobs
  served, with ``PRIOR_JOBS`` good jobs of credit;
* **verification strikes** (``WorkerNode.verification_strikes``, set by the verification of
  community nodes' results): each takes ``RELIABILITY_STRIKE_PENALTY`` off the score.

Replicas that fail to load are not counted: the deployment's settings (the operator's) are the
usual cause, and they would mark every node that tried.

Heartbeats arrive every second from every node, so nothing here writes to the database on the
hot paths: counters go to one Redis hash per hour (one round trip, pipelined), and the periodic
task (:mod:`gpucloud.periodic`) adds them to :class:`~deployments.models.NodeActivity` rows and
refreshes each node's ``reliability`` with :func:`refresh`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Sum
from django.utils import timezone

from deployments.models import NodeActivity, WorkerNode
from gpucloud.redis_client import get_async_redis, get_redis

logger = logging.getLogger(__name__)

ONLINE, SERVED, LOST, FAILED = "online", "served", "lost", "failed"
METRICS = {ONLINE: "online_seconds", SERVED: "jobs_served", LOST: "jobs_lost", FAILED: "jobs_failed"}
HOURS_KEY = "gpucloud:activity:hours"
FLUSH_LOCK_KEY = "gpucloud:activity-flush"
KEY_TTL_SECONDS = 9 * 24 * 3600
# A new node's credit: an hour online, ten jobs served.
PRIOR_SECONDS = 3600.0
PRIOR_JOBS = 10


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _key(hour: datetime) -> str:
    return f"gpucloud:activity:{int(hour.timestamp())}"


def _commands(pipe, node_name: str, counts: dict[str, float], now: datetime) -> None:
    key = _key(hour_of(now))
    for metric, amount in counts.items():
        if amount:
            pipe.hincrbyfloat(key, f"{metric}|{node_name}", amount)
    pipe.expire(key, KEY_TTL_SECONDS)
    pipe.sadd(HOURS_KEY, key)


_client = None


def _redis():
    """One client (and connection pool) per process for the heartbeat path, rather than a new
    connection for every heartbeat."""
    global _client
    if _client is None:
        _client = get_redis()
    return _client


def record(node_name: str, counts: dict[str, float], now: datetime | None = None) -> None:
    """Count ``{metric: amount}`` for a node in this hour (one Redis round trip)."""
    if not node_name or not any(counts.values()):
        return
    pipe = _redis().pipeline(transaction=False)
    _commands(pipe, node_name, counts, now or timezone.now())
    pipe.execute()


async def arecord(node_name: str, counts: dict[str, float], now: datetime | None = None) -> None:
    """:func:`record` from async code."""
    if not node_name or not any(counts.values()):
        return
    pipe = get_async_redis().pipeline(transaction=False)
    _commands(pipe, node_name, counts, now or timezone.now())
    await pipe.execute()


def online_seconds(previous_heartbeat: datetime | None, now: datetime) -> float:
    """What a heartbeat at ``now`` adds to a node's time online: the time since its previous one,
    at most ``WORKER_OFFLINE_AFTER`` (a longer silence was downtime)."""
    if previous_heartbeat is None:
        return 0.0
    return max(0.0, min((now - previous_heartbeat).total_seconds(), settings.WORKER_OFFLINE_AFTER))


def flush(now: datetime | None = None) -> int:
    """Add the counters kept in Redis to the hourly NodeActivity rows; returns the rows touched.

    The counters are subtracted in Redis only after the rows are committed, so a database that
    fails loses nothing (the next flush tries again), and increments made meanwhile are kept.
    """
    now = now or timezone.now()
    redis = get_redis()
    # One flush at a time: two would both add the same counts before either subtracts them.
    with redis.lock(FLUSH_LOCK_KEY, timeout=60, blocking_timeout=60):
        return _flush(redis, _key(hour_of(now)))


def _flush(redis, current: str) -> int:
    touched = 0
    for raw_key in sorted(redis.smembers(HOURS_KEY)):
        key = raw_key.decode()
        values = {field.decode(): float(value) for field, value in redis.hgetall(key).items()}
        hour = datetime.fromtimestamp(int(key.rsplit(":", 1)[1]), tz=UTC)
        by_node: dict[str, dict[str, float]] = defaultdict(dict)
        for field, value in values.items():
            metric, _, name = field.partition("|")
            if metric in METRICS and value:
                by_node[name][metric] = value
        ids = dict(WorkerNode.objects.filter(name__in=list(by_node)).values_list("name", "pk"))
        with transaction.atomic():
            for name, counts in by_node.items():
                if name not in ids:
                    continue
                row, _ = NodeActivity.objects.get_or_create(node_id=ids[name], hour=hour)
                NodeActivity.objects.filter(pk=row.pk).update(
                    **{METRICS[m]: F(METRICS[m]) + (v if m == ONLINE else round(v)) for m, v in counts.items()}
                )
                touched += 1
        pipe = redis.pipeline(transaction=False)
        for field, value in values.items():
            if value:
                pipe.hincrbyfloat(key, field, -value)
        if key != current:
            # A past hour takes no more counts: once flushed, it goes.
            pipe.delete(key)
            pipe.srem(HOURS_KEY, key)
        pipe.execute()
    return touched


def reliability_score(
    *,
    online_seconds: float,
    observed_seconds: float,
    served: int,
    lost: int,
    failed: int,
    strikes: int,
    strike_penalty: float | None = None,
) -> float:
    """The score from a node's history (pure): uptime x share of good jobs x strike factor, each
    with a new node's credit, between 0 and 1."""
    penalty = settings.RELIABILITY_STRIKE_PENALTY if strike_penalty is None else strike_penalty
    uptime = (min(online_seconds, observed_seconds) + PRIOR_SECONDS) / (max(observed_seconds, 0) + PRIOR_SECONDS)
    jobs = (served + PRIOR_JOBS) / (served + lost + failed + PRIOR_JOBS)
    verified = max(0.0, 1.0 - penalty * strikes)
    return round(max(0.0, min(1.0, uptime * jobs * verified)), 4)


def refresh(now: datetime | None = None) -> int:
    """Recompute every node's reliability from its recent history; returns the nodes changed."""
    now = now or timezone.now()
    since = hour_of(now - timedelta(days=settings.RELIABILITY_WINDOW_DAYS))
    window = NodeActivity.objects.filter(hour__gte=since).order_by()
    # The fleet was observed, in each hour, for as long as its most present node was online.
    observed_by_hour = dict(window.values_list("hour").annotate(Max("online_seconds")))
    totals: dict[int, tuple] = defaultdict(lambda: (0.0, 0, 0, 0))
    sums = [Sum(field) for field in METRICS.values()]
    for node_id, *figures in window.values_list("node_id").annotate(*sums):
        totals[node_id] = tuple(figure or 0 for figure in figures)
    changed = []
    for node in WorkerNode.objects.exclude(status=WorkerNode.Status.LEFT):
        joined = node.registered_at
        observed = 0.0
        for hour, seconds in observed_by_hour.items():
            if hour + timedelta(hours=1) <= joined:
                continue
            # The hour it joined in counts from its joining.
            room = (hour + timedelta(hours=1) - max(hour, joined)).total_seconds()
            observed += min(seconds, room)
        online, served, lost, failed = totals[node.pk]
        score = reliability_score(
            online_seconds=online,
            observed_seconds=observed,
            served=int(served),
            lost=int(lost),
            failed=int(failed),
            strikes=node.verification_strikes,
        )
        detail = {
            "uptime": round(min(online / observed, 1.0), 4) if observed else None,
            "online_seconds": round(online),
            "jobs_served": int(served),
            "jobs_lost": int(lost),
            "jobs_failed": int(failed),
            "verification_strikes": node.verification_strikes,
            "window_days": settings.RELIABILITY_WINDOW_DAYS,
        }
        if score != node.reliability or detail != node.reliability_detail:
            node.reliability, node.reliability_detail = score, detail
            changed.append(node)
    WorkerNode.objects.bulk_update(changed, ["reliability", "reliability_detail"])
    return len(changed)


REFRESH_KEY = "gpucloud:reliability-refreshed"
REFRESH_SECONDS = 30


def update(now: datetime | None = None) -> int | None:
    """The periodic step: flush the counters and refresh the scores, at most every REFRESH_SECONDS
    (the scores move slowly, and a refresh reads a week of history); None when not due."""
    if not _redis().set(REFRESH_KEY, 1, nx=True, px=REFRESH_SECONDS * 1000):
        return None
    flush(now)
    return refresh(now)


def reliable(node: WorkerNode) -> bool:
    """Whether a node may take new replicas."""
    return node.reliability >= settings.RELIABILITY_MIN_SCORE

"""Which GPU workers are alive, kept in Redis by the /ws/workers/ consumer on every heartbeat.

A sorted set maps node names to their last heartbeat time, so "which nodes are alive?" (asked by
/health) is one Redis call.
"""

from __future__ import annotations

import time

from django.conf import settings

from gpucloud.redis_client import get_redis

WORKERS_KEY = "gpucloud:workers"


def worker_seen(name: str) -> None:
    get_redis().zadd(WORKERS_KEY, {name: time.time()})


def worker_gone(name: str) -> None:
    get_redis().zrem(WORKERS_KEY, name)


def live_workers() -> list[str]:
    """Names of the workers that sent a heartbeat within ``WORKER_OFFLINE_AFTER`` seconds."""
    cutoff = time.time() - settings.WORKER_OFFLINE_AFTER
    return sorted(name.decode() for name in get_redis().zrangebyscore(WORKERS_KEY, cutoff, "+inf"))


INTERRUPTED_KEY = "gpucloud:heartbeats-interrupted"


def heartbeats_interrupt() -> None:
    """A heartbeat could not be recorded (the database was unreachable): for a while, a node's
    silence is not taken as its absence."""
    get_redis().set(INTERRUPTED_KEY, 1, px=round((settings.WORKER_OFFLINE_AFTER + 2) * 1000))


def heartbeats_interrupted() -> bool:
    return bool(get_redis().exists(INTERRUPTED_KEY))

"""Which GPU workers are alive, kept in Redis by the /ws/workers/ consumer on every heartbeat.

A sorted set maps worker names to their last heartbeat time, so "is this worker alive?" (asked by
views waiting on a worker, and by /health) is one Redis call.
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


def worker_alive(name: str) -> bool:
    seen = get_redis().zscore(WORKERS_KEY, name)
    return seen is not None and seen >= time.time() - settings.WORKER_OFFLINE_AFTER


def live_workers() -> list[str]:
    """Names of the workers that sent a heartbeat within ``WORKER_OFFLINE_AFTER`` seconds."""
    cutoff = time.time() - settings.WORKER_OFFLINE_AFTER
    return sorted(name.decode() for name in get_redis().zrangebyscore(WORKERS_KEY, cutoff, "+inf"))

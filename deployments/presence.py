"""Which GPU workers are alive: each worker refreshes its entry in a Redis sorted set."""

from __future__ import annotations

import json
import time

from django.conf import settings

from gpucloud.redis_client import get_redis as _redis

WORKERS_KEY = "gpucloud:workers"


def worker_seen(name: str, info: dict) -> None:
    pipe = _redis().pipeline()
    pipe.zadd(WORKERS_KEY, {name: time.time()})
    pipe.set(f"{WORKERS_KEY}:{name}", json.dumps(info), ex=int(settings.WORKER_PRESENCE_INTERVAL * 5) + 1)
    pipe.execute()


def worker_gone(name: str) -> None:
    _redis().zrem(WORKERS_KEY, name)


def live_workers() -> list[dict]:
    """Workers that announced themselves within the last three presence intervals."""
    cutoff = time.time() - settings.WORKER_PRESENCE_INTERVAL * 3
    names = [n.decode() for n in _redis().zrangebyscore(WORKERS_KEY, cutoff, "+inf")]
    workers = []
    for name in names:
        raw = _redis().get(f"{WORKERS_KEY}:{name}")
        workers.append({"name": name, **(json.loads(raw) if raw else {})})
    return workers

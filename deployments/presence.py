"""Which GPU nodes are alive, kept in Redis by the web process that holds each node's socket.

A sorted set maps node names to when they were last heard from, so "which nodes are alive?"
(asked by /health and by placement) is one Redis call. The dispatcher of a node's session
(:class:`inference.dispatcher.NodeDispatcher`) has it written every second by the process's
liveness thread (:mod:`inference.liveness`), beside its jobs' leases, while the node is heard
from, and removed the moment the node falls silent: a node's liveness never waits on its
heartbeat's database write, which lags under load, nor on a busy event loop.
"""

from __future__ import annotations

import time

from django.conf import settings

from gpucloud.redis_client import get_redis

WORKERS_KEY = "gpucloud:workers"


def worker_seen(name: str) -> None:
    get_redis().zadd(WORKERS_KEY, {name: time.time()})


def worker_seen_queue(pipe, name: str, at: float) -> None:
    """Queue on a pipeline: the node was heard from at ``at`` (a Unix time)."""
    pipe.zadd(WORKERS_KEY, {name: at})


def worker_silent_queue(pipe, name: str) -> None:
    """Queue on a pipeline: the node's socket is open but it said nothing for
    ``WORKER_OFFLINE_AFTER``: not alive."""
    pipe.zrem(WORKERS_KEY, name)


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

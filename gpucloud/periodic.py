"""The server's periodic work: reliability scores, autoscaling and dynamic prices.

It needs no scheduler process (no Celery beat): like placement's own catch-up, it rides on the
node heartbeats that every web process holding a node socket receives. After recording a
heartbeat, the consumer asks :func:`claim_turn`: a Redis ``SET NX PX`` lets exactly one process
run :func:`run` per ``PERIODIC_INTERVAL`` across the whole platform, off the event loop. With no
node connected there is nothing to scale or price. ``manage.py periodic`` runs it once by hand.

Each step is a service with its decisions in pure functions (taking ``now=``); a step that fails
is logged and the others still run.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from gpucloud.redis_client import get_async_redis

logger = logging.getLogger(__name__)

TURN_KEY = "gpucloud:periodic"


async def claim_turn() -> bool:
    """Whether this process runs the periodic work now (at most once per interval, platform-wide)."""
    interval_ms = max(round(settings.PERIODIC_INTERVAL * 1000), 100)
    return bool(await get_async_redis().set(TURN_KEY, 1, nx=True, px=interval_ms))


def steps():
    from billing import pricing
    from deployments import autoscale, reliability

    return [
        ("reliability", reliability.update),
        ("autoscaling", autoscale.autoscale),
        ("utilisation", pricing.sample_utilisation),
        ("dynamic prices", pricing.reprice),
    ]


def run(now: datetime | None = None) -> None:
    """Run every periodic step once."""
    now = now or timezone.now()
    for name, step in steps():
        try:
            step(now=now)
        except Exception:
            logger.exception("Periodic step '%s' failed; the next run tries again", name)

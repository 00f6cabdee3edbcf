"""The Channels layer, made to ride out a Redis outage.

``channels_redis`` raises from ``receive()`` when Redis goes away, and a consumer whose receive
raises is torn down with its socket: one Redis restart would disconnect every GPU node and
browser at once. Here ``receive()`` waits for Redis to come back instead (retrying with a short
backoff), so sockets stay open and heartbeats keep flowing through an outage. Senders still see
the error at once and decide for themselves (a view fails its request cleanly; a dispatcher
drops a job it cannot relay).
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0)
LOG_EVERY_SECONDS = 10.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    _last_logged = 0.0

    async def receive(self, channel):
        attempt = 0
        while True:
            try:
                return await super().receive(channel)
            except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as error:
                now = time.monotonic()
                if now - ResilientRedisChannelLayer._last_logged > LOG_EVERY_SECONDS:
                    ResilientRedisChannelLayer._last_logged = now
                    logger.warning("Channels layer unreachable (%s); waiting for Redis to come back", error)
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1

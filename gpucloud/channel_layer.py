"""The Channels layer: channels_redis, made to ride out a Redis outage and to carry thousands of streams.

**Outages.** ``channels_redis`` raises from ``receive()`` when Redis goes away, and a consumer whose
receive raises is torn down with its socket: one Redis restart would disconnect every GPU node and
browser at once. Here ``receive()`` waits for Redis to come back instead, so sockets stay open and
heartbeats keep flowing through an outage. Senders still see the error at once and decide for
themselves (a view fails its request cleanly; a dispatcher drops a job it cannot relay).

**Load.** Every reply channel of a web process (and every consumer's channel) is a "specific"
channel, and channels_redis keeps all of a process's specific channels in one sorted set. Its
``receive()`` takes one message per turn, under one lock that every waiting receiver contends for,
with four Redis round trips per message (and ``send()`` makes four more): with two thousand
streams in one process that is most of a CPU. Here:

- ``send()`` to a channel is one Lua script (expire old messages, check capacity, add, refresh the
  key's expiry), in the same layout, so nothing else changes;
- a message for a channel of this very process, received on this event loop, is handed over
  directly (the capacity still applies);
- the specific channels of this process are read by one reader task per event loop, which takes
  up to ``RECEIVE_BATCH`` messages per round trip (blocking only when there are none) and hands
  each to its channel's local queue; ``receive()`` just waits on that queue. While more than
  ``capacity`` messages wait in those queues the reader stops reading, so the sorted set fills and
  senders get ``ChannelFull`` (a dispatcher then waits: backpressure, never loss).

Messages for a channel whose receiver was cancelled (a finished request) are dropped, and a local
queue nobody has read for ``expiry`` seconds is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0)
LOG_EVERY_SECONDS = 10.0
RECEIVE_BATCH = 500
BLOCK_SECONDS = 1
SWEEP_EVERY_SECONDS = 30.0
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

# KEYS[1]: the channel's sorted set. ARGV: message, capacity, expired-before, score, key expiry.
SEND_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class _LocalReceiver:
    """The specific channels of this process on one event loop: a reader task and a queue per channel."""

    def __init__(self, layer: ResilientRedisChannelLayer, key: str) -> None:
        self.layer = layer
        self.key = key
        self.queues: dict[str, asyncio.Queue] = {}
        self.touched: dict[str, float] = {}
        self.closed: dict[str, float] = {}  # channels whose receiver is gone: their messages are dropped
        self.buffered = 0
        self.task = asyncio.get_running_loop().create_task(self._read(), name="channel-layer-reader")
        self.last_sweep = time.monotonic()

    def queue(self, channel: str) -> asyncio.Queue:
        self.closed.pop(channel, None)
        queue = self.queues.get(channel)
        if queue is None:
            queue = self.queues[channel] = asyncio.Queue()
            self.touched[channel] = time.monotonic()
        return queue

    def close(self, channel: str) -> None:
        """The channel's receiver was cancelled: forget what waits for it, drop what comes later."""
        queue = self.queues.pop(channel, None)
        self.touched.pop(channel, None)
        if queue is not None:
            self.buffered -= queue.qsize()
        self.closed[channel] = time.monotonic()

    def got(self, channel: str) -> None:
        self.buffered -= 1
        self.touched[channel] = time.monotonic()

    def _deliver(self, raw: bytes) -> None:
        message = self.layer.deserialize(raw)
        channels = message.pop("__asgi_channel__", None)
        for channel in channels if isinstance(channels, list) else [channels]:
            if channel is None or channel in self.closed:
                continue
            self.queue(channel).put_nowait(dict(message))
            self.buffered += 1

    def _sweep(self) -> None:
        now = time.monotonic()
        self.last_sweep = now
        expiry = self.layer.expiry
        for channel, at in list(self.touched.items()):
            queue = self.queues.get(channel)
            if queue is not None and now - at > expiry and not getattr(queue, "_getters", None):
                self.close(channel)
        self.closed = {c: at for c, at in self.closed.items() if now - at < expiry}

    async def _read(self) -> None:
        attempt = 0
        while True:
            try:
                if time.monotonic() - self.last_sweep > SWEEP_EVERY_SECONDS:
                    self._sweep()
                if self.buffered >= self.layer.capacity:
                    # Receivers are behind: leave the rest in Redis, whose capacity then holds senders back.
                    await asyncio.sleep(0.05)
                    continue
                connection = self.layer.connection(0)
                popped = await connection.zpopmin(self.key, RECEIVE_BATCH)
                if not popped:
                    result = await connection.bzpopmin(self.key, timeout=BLOCK_SECONDS)
                    popped = [] if result is None else [(result[1], result[2])]
                attempt = 0
                for raw, _score in popped:
                    try:
                        self._deliver(raw)
                    except Exception:
                        logger.exception("Dropped a Channels message that could not be read")
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as error:
                self.layer.log_outage(error)
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1
            except Exception:
                logger.exception("The Channels layer's reader failed; it carries on")
                await asyncio.sleep(1)


class ResilientRedisChannelLayer(RedisChannelLayer):
    _last_logged = 0.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._receivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LocalReceiver] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def log_outage(cls, error: Exception) -> None:
        now = time.monotonic()
        if now - cls._last_logged > LOG_EVERY_SECONDS:
            cls._last_logged = now
            logger.warning("Channels layer unreachable (%s); waiting for Redis to come back", error)

    async def send(self, channel, message):
        """Send in one round trip; ``ChannelFull`` past the channel's capacity, as channels_redis."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        if self._deliver_locally(channel, message):
            return
        key = channel
        if "!" in channel:
            message = {**message, "__asgi_channel__": channel}
            key = self.non_local_name(channel)
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        now = time.time()
        added = await self.connection(index).eval(
            SEND_SCRIPT,
            1,
            self.prefix + key,
            self.serialize(message),
            self.get_capacity(channel),
            int(now) - int(self.expiry),
            now,
            int(self.expiry),
        )
        if not added:
            raise ChannelFull()

    def _deliver_locally(self, channel: str, message: dict) -> bool:
        """A channel of this process that is being received on this event loop (a view and the
        dispatcher of its job's node in one web process) gets the message directly: no Redis round
        trip, which would hold up the sender's next message. Same capacity, same ChannelFull."""
        if "!" not in channel or not channel.startswith(f"specific.{self.client_prefix}!"):
            return False
        receiver = self._receivers.get(asyncio.get_running_loop())
        if receiver is None or receiver.task.done() or channel not in receiver.queues:
            return False
        if receiver.buffered >= self.get_capacity(channel):
            raise ChannelFull()
        receiver.queues[channel].put_nowait(dict(message))
        receiver.buffered += 1
        return True

    async def receive(self, channel):
        if "!" not in channel or self.ring_size != 1:
            return await self._receive_resiliently(channel)
        real_channel = self.non_local_name(channel)
        assert real_channel.endswith(self.client_prefix + "!"), "Wrong client prefix"
        loop = asyncio.get_running_loop()
        receiver = self._receivers.get(loop)
        if receiver is None or receiver.task.done():
            receiver = self._receivers[loop] = _LocalReceiver(self, self.prefix + real_channel)
        queue = receiver.queue(channel)
        try:
            message = await queue.get()
        except asyncio.CancelledError:
            receiver.close(channel)
            raise
        receiver.got(channel)
        return message

    async def _receive_resiliently(self, channel):
        attempt = 0
        while True:
            try:
                return await super().receive(channel)
            except REDIS_ERRORS as error:
                self.log_outage(error)
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1

    async def flush(self):
        for receiver in list(self._receivers.values()):
            with contextlib.suppress(RuntimeError):  # a loop closed already
                receiver.task.cancel()
        self._receivers.clear()
        await super().flush()

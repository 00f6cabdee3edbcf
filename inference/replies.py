"""The reply protocol between a GPU worker and the view waiting for its output.

The view opens a reply channel on the Channels layer and puts its name in the task. The worker
sends, in order:

* ``inference.start`` -- ``{"worker": name}``, when it picks the request up;
* ``inference.events`` -- ``{"events": [{"i": choice, "t": text, "f": finish_reason|None}, ...]}``,
  batched so a fast engine does not send one message per token;
* ``inference.done`` -- ``{"usage": {...}}``; or ``inference.error`` -- ``{"message", "code"}``.

A view that loses its client sets a cancel flag in Redis; the worker checks it between batches.
"""

from __future__ import annotations

import time

from gpucloud.redis_client import get_redis

START, EVENTS, DONE, ERROR = "inference.start", "inference.events", "inference.done", "inference.error"
CANCEL_TTL_SECONDS = 600


def _cancel_key(request_id: str) -> str:
    return f"gpucloud:cancel:{request_id}"


def request_cancel(request_id: str) -> None:
    get_redis().set(_cancel_key(request_id), 1, ex=CANCEL_TTL_SECONDS)


def is_cancelled(request_id: str) -> bool:
    return bool(get_redis().exists(_cancel_key(request_id)))


class RequestCancelled(Exception):
    """The client went away; the worker stops generating."""


class ReplySender:
    """Worker side: batches output events and sends them to the view's reply channel."""

    def __init__(self, layer, channel: str, request_id: str, flush_interval: float = 0.03) -> None:
        self.layer = layer
        self.channel = channel
        self.request_id = request_id
        self.flush_interval = flush_interval
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()

    async def start(self, worker: str) -> None:
        await self.layer.send(self.channel, {"type": START, "worker": worker})

    async def emit(self, index: int, text: str, finish_reason: str | None) -> None:
        self.pending.append({"i": index, "t": text, "f": finish_reason})
        if finish_reason is not None or time.monotonic() - self.last_flush >= self.flush_interval:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            events, self.pending = self.pending, []
            await self.layer.send(self.channel, {"type": EVENTS, "events": events})
        self.last_flush = time.monotonic()
        if is_cancelled(self.request_id):
            raise RequestCancelled(self.request_id)

    async def done(self, usage: dict) -> None:
        await self.flush()
        await self.layer.send(self.channel, {"type": DONE, "usage": usage})

    async def error(self, message: str, code: str) -> None:
        await self.layer.send(self.channel, {"type": ERROR, "message": message, "code": code})

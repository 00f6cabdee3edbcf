"""The reply protocol between a GPU worker and the view waiting for its output.

The view opens a reply channel on the Channels layer and puts its name in the task. The worker
sends, in order:

* ``inference.start`` -- ``{"worker": name}``, when it picks the request up;
* ``inference.events`` -- ``{"events": [{"i": choice, "t": text, "f": finish_reason|None}, ...]}``,
  batched so a fast engine does not send one message per token;
* ``inference.done`` -- ``{"usage": {...}}``; or ``inference.error`` -- ``{"message", "code"}``.

Every message carries the ``attempt`` it belongs to. The view keeps the request's current attempt
in Redis; a worker runs a task only while its attempt is current, so a request dispatched again
after its worker died (or cancelled because the client went away) is never run twice.
"""

from __future__ import annotations

import time

from gpucloud.redis_client import get_redis

START, EVENTS, DONE, ERROR = "inference.start", "inference.events", "inference.done", "inference.error"
STATE_TTL_SECONDS = 6 * 3600
CANCELLED = 0


def _state_key(request_id: str) -> str:
    return f"gpucloud:request:{request_id}"


def attempt_begin(request_id: str, attempt: int) -> None:
    get_redis().set(_state_key(request_id), attempt, ex=STATE_TTL_SECONDS)


def request_cancel(request_id: str) -> None:
    attempt_begin(request_id, CANCELLED)


def attempt_is_current(request_id: str, attempt: int) -> bool:
    current = get_redis().get(_state_key(request_id))
    return current is not None and int(current) == attempt


class RequestCancelled(Exception):
    """The client went away, or the request was dispatched again elsewhere: stop generating."""


class ReplySender:
    """Worker side: batches output events and sends them to the view's reply channel."""

    def __init__(self, layer, channel: str, request_id: str, attempt: int, flush_interval: float = 0.03) -> None:
        self.layer = layer
        self.channel = channel
        self.request_id = request_id
        self.attempt = attempt
        self.flush_interval = flush_interval
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()

    async def start(self, worker: str) -> None:
        await self._send({"type": START, "worker": worker})

    async def _send(self, message: dict) -> None:
        await self.layer.send(self.channel, {**message, "attempt": self.attempt})

    async def emit(self, index: int, text: str, finish_reason: str | None) -> None:
        self.pending.append({"i": index, "t": text, "f": finish_reason})
        if finish_reason is not None or time.monotonic() - self.last_flush >= self.flush_interval:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            events, self.pending = self.pending, []
            await self._send({"type": EVENTS, "events": events})
        self.last_flush = time.monotonic()
        if not attempt_is_current(self.request_id, self.attempt):
            raise RequestCancelled(self.request_id)

    async def done(self, usage: dict) -> None:
        await self.flush()
        await self._send({"type": DONE, "usage": usage})

    async def error(self, message: str, code: str) -> None:
        await self._send({"type": ERROR, "message": message, "code": code})

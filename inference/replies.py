"""The reply protocol between a GPU worker and the view waiting for its output.

The view opens a reply channel on the Channels layer and puts its name in the task. The worker
sends, in order:

* ``inference.start`` -- ``{"worker": name}``, when it picks the request up;
* ``inference.events`` -- ``{"events": [{"i": choice, "t": text, "f": finish_reason|None}, ...]}``,
  batched so a fast engine does not send one message per token;
* ``inference.vectors`` -- for embeddings, instead of events: ``{"offset", "count", "dimensions",
  "data"}``, ``count`` vectors from input ``offset`` on as little-endian float32 bytes (OpenAI's
  base64 layout), in messages of at most ``VECTORS_MESSAGE_BYTES``;
* ``inference.done`` -- ``{"usage": {...}}``; or ``inference.error`` -- ``{"message", "code",
  "status"}`` (``status``: the HTTP status for the client, 502 unless the engine says otherwise).

Every message carries the ``attempt`` it belongs to. The view keeps the request's current attempt
in Redis; a worker runs a task only while its attempt is current, so a request dispatched again
after its worker died (or cancelled because the client went away) is never run twice.
"""

from __future__ import annotations

import sys
import time
from array import array

from gpucloud.redis_client import get_redis

START, EVENTS, DONE, ERROR = "inference.start", "inference.events", "inference.done", "inference.error"
VECTORS = "inference.vectors"
# Small enough that a slow reader never holds much in Redis, large enough for 256 vectors of 384.
VECTORS_MESSAGE_BYTES = 512 * 1024
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


def pack_vectors(vectors: list[list[float]]) -> bytes:
    """Vectors as little-endian float32 bytes, one after the other."""
    packed = array("f")
    for vector in vectors:
        packed.extend(vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_floats(data: bytes) -> list[float]:
    """Little-endian float32 bytes as floats."""
    values = array("f", data)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


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

    async def vectors(self, vectors: list[list[float]]) -> None:
        """Send embedding vectors in messages of at most VECTORS_MESSAGE_BYTES."""
        dimensions = len(vectors[0]) if vectors else 0
        per_message = max(1, VECTORS_MESSAGE_BYTES // max(4 * dimensions, 1))
        for offset in range(0, len(vectors), per_message):
            if not attempt_is_current(self.request_id, self.attempt):
                raise RequestCancelled(self.request_id)
            part = vectors[offset : offset + per_message]
            data = pack_vectors(part)
            await self._send(
                {"type": VECTORS, "offset": offset, "count": len(part), "dimensions": dimensions, "data": data}
            )

    async def error(self, message: str, code: str, status: int = 502) -> None:
        """End with an error, after the output produced so far (the client keeps what it got)."""
        if self.pending:
            events, self.pending = self.pending, []
            await self._send({"type": EVENTS, "events": events})
        await self._send({"type": ERROR, "message": message, "code": code, "status": status})

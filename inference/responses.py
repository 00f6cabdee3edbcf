"""Response shaping: a call's output as an OpenAI completion, whole or as server-sent events."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator

from django.conf import settings

from gpucloud.openai_errors import ApiError
from inference.calls import InferenceCall
from inference.metering import CLIENT_CLOSED

SYSTEM_FINGERPRINT = "fp_gpucloud"


# Each request's usage is settled in a database transaction of its own, in a thread of its own.
# Thousands of streams ending together would all queue on the database's write lock at once (and
# on the GIL), starving every other writer, the nodes' heartbeats among them: a few at a time go
# through faster.
_settling: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def _record(meter, status: int, error_code: str | None = None) -> None:
    loop = asyncio.get_running_loop()
    slots = _settling.get(loop)
    if slots is None:
        slots = _settling[loop] = asyncio.Semaphore(settings.INFERENCE_SETTLE_CONCURRENCY)
    async with slots:
        await meter.record(status, error_code)


def _sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class CompletionResponse:
    """Shapes a call's output as an OpenAI completion, whole or as a stream of chunks.

    Subclasses give the shape of one choice: whole, opening the stream, a delta, and its end.
    """

    object_whole = object_chunk = id_prefix = ""

    def __init__(self, call: InferenceCall, model: str, include_usage: bool) -> None:
        self.call = call
        self.model = model
        self.include_usage = include_usage
        self.id = f"{self.id_prefix}-{call.meter.request.request_id.removeprefix('req_')}"
        self.created = int(time.time())

    def whole_choice(self, index: int, text: str, reason: str) -> dict:
        raise NotImplementedError

    def opening_choice(self, index: int) -> dict | None:
        return None

    def delta_choice(self, index: int, text: str) -> dict:
        raise NotImplementedError

    def finish_choice(self, index: int, reason: str) -> dict:
        raise NotImplementedError

    def _envelope(self, obj: str, choices: list[dict]) -> dict:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }

    async def collect(self) -> dict:
        """The whole completion, its usage with the request's cost (settled before it is returned)."""
        n = self.call.job.n
        meter = self.call.meter
        texts, reasons = [""] * n, [None] * n
        try:
            async for event in self.call.events():
                if event.get("reset"):
                    texts, reasons = [""] * n, [None] * n
                    continue
                texts[event["i"]] += event["t"]
                if event["f"]:
                    reasons[event["i"]] = event["f"]
        except ApiError as error:
            await asyncio.shield(_record(meter, error.status, error.code))
            raise
        except asyncio.CancelledError:
            # The client went away before the answer was whole: stop the worker; nothing to charge.
            await asyncio.shield(self.call.cancel())
            await asyncio.shield(_record(meter, CLIENT_CLOSED, "client_closed_request"))
            raise
        await asyncio.shield(_record(meter, 200))
        choices = [self.whole_choice(i, text, reasons[i] or "stop") for i, text in enumerate(texts)]
        return {**self._envelope(self.object_whole, choices), "usage": meter.usage(self.call.usage)}

    def _chunk(self, choices: list[dict]) -> dict:
        chunk = self._envelope(self.object_chunk, choices)
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    async def stream(self) -> AsyncIterator[bytes]:
        """Server-sent events: opening chunks, deltas, finish chunks, usage, ``[DONE]``."""
        meter = self.call.meter
        status, error_code = 200, None
        try:
            opening = [c for i in range(self.call.job.n) if (c := self.opening_choice(i)) is not None]
            if opening:
                yield _sse(self._chunk(opening))
            try:
                async for event in self.call.events():
                    if event["t"]:
                        yield _sse(self._chunk([self.delta_choice(event["i"], event["t"])]))
                    if event["f"]:
                        yield _sse(self._chunk([self.finish_choice(event["i"], event["f"])]))
            except ApiError as error:
                status, error_code = error.status, error.code
                yield _sse(error.as_dict())
            else:
                # Settled before the usage chunk, which carries the cost.
                await asyncio.shield(_record(meter, 200))
                if self.include_usage:
                    yield _sse({**self._chunk([]), "usage": meter.usage(self.call.usage)})
            yield _sse("[DONE]")
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: stop the worker, and bill the text it was sent so far.
            status, error_code = CLIENT_CLOSED, "client_closed_request"
            await asyncio.shield(self.call.cancel())
            raise
        finally:
            await asyncio.shield(_record(meter, status, error_code))


class ChatCompletion(CompletionResponse):
    object_whole, object_chunk, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def whole_choice(self, index: int, text: str, reason: str) -> dict:
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": reason}

    def opening_choice(self, index: int) -> dict:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def delta_choice(self, index: int, text: str) -> dict:
        return {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}

    def finish_choice(self, index: int, reason: str) -> dict:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}


class TextCompletion(CompletionResponse):
    """``/v1/completions``; with ``echo`` each choice starts with its prompt."""

    object_whole = object_chunk = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, call: InferenceCall, model: str, include_usage: bool, echoed: list[str]) -> None:
        super().__init__(call, model, include_usage)
        self.echoed = echoed  # per choice: the prompt to repeat, or ""

    def whole_choice(self, index: int, text: str, reason: str) -> dict:
        return {"index": index, "text": self.echoed[index] + text, "logprobs": None, "finish_reason": reason}

    def opening_choice(self, index: int) -> dict | None:
        if not self.echoed[index]:
            return None
        return {"index": index, "text": self.echoed[index], "logprobs": None, "finish_reason": None}

    def delta_choice(self, index: int, text: str) -> dict:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": None}

    def finish_choice(self, index: int, reason: str) -> dict:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": reason}

"""Response shaping: a call's output as an OpenAI completion, whole or as server-sent events."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import weakref
from collections.abc import AsyncIterator

from django.conf import settings

from gpucloud import request_threads
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


class Choice:
    """One choice's output so far: text, finish reason, log-probability entries, tool calls."""

    def __init__(self) -> None:
        self.text = ""
        self.reason: str | None = None
        self.logprobs: list[dict] = []
        self.tool_calls: dict[int, dict] = {}

    def add(self, event: dict) -> None:
        self.text += event["t"]
        self.logprobs.extend(event.get("lp") or [])
        for piece in event.get("tc") or []:
            call = self.tool_calls.setdefault(
                piece["index"],
                {"id": _call_id(piece), "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if piece.get("name"):
                call["function"]["name"] = piece["name"]
            call["function"]["arguments"] += piece["arguments"]
        if event["f"]:
            self.reason = event["f"]


def _call_id(piece: dict) -> str:
    return piece.get("id") or f"call_{secrets.token_hex(12)}"


def _chat_logprob(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def chat_logprobs(entries: list[dict]) -> dict:
    """Chat's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}``."""
    content = [
        {**_chat_logprob(e["token"], e["logprob"]), "top_logprobs": [_chat_logprob(t, lp) for t, lp in e["top"]]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def text_logprobs(entries: list[dict], offset: int) -> dict:
    """/v1/completions' ``logprobs``: parallel lists, the first token at character ``offset``."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [dict(e["top"]) for e in entries],
        "text_offset": offsets,
    }


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
        self.logprobs = bool(getattr(call.job, "logprobs", False))

    def whole_choice(self, index: int, choice: Choice) -> dict:
        raise NotImplementedError

    def opening_choice(self, index: int) -> dict | None:
        return None

    def delta_choice(self, event: dict) -> dict | None:
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
        choices = [Choice() for _ in range(n)]
        try:
            async for event in self.call.events():
                if event.get("reset"):
                    choices = [Choice() for _ in range(n)]
                    continue
                choices[event["i"]].add(event)
        except ApiError as error:
            await request_threads.shield(_record(meter, error.status, error.code))
            raise
        except asyncio.CancelledError:
            # The client went away before the answer was whole: stop the worker; nothing to charge.
            await request_threads.shield(self.call.cancel())
            await request_threads.shield(_record(meter, CLIENT_CLOSED, "client_closed_request"))
            raise
        await request_threads.shield(_record(meter, 200))
        whole = [self.whole_choice(i, choice) for i, choice in enumerate(choices)]
        return {**self._envelope(self.object_whole, whole), "usage": meter.usage(self.call.usage)}

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
                    delta = self.delta_choice(event)
                    if delta is not None:
                        yield _sse(self._chunk([delta]))
                    if event["f"]:
                        yield _sse(self._chunk([self.finish_choice(event["i"], event["f"])]))
            except ApiError as error:
                # Settled before the error event: a client that hangs up at [DONE] cuts nothing short.
                status, error_code = error.status, error.code
                await request_threads.shield(_record(meter, status, error_code))
                yield _sse(error.as_dict())
            else:
                # Settled before the usage chunk, which carries the cost.
                await request_threads.shield(_record(meter, 200))
                if self.include_usage:
                    yield _sse({**self._chunk([]), "usage": meter.usage(self.call.usage)})
            yield _sse("[DONE]")
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: stop the worker, and bill the text it was sent so far.
            status, error_code = CLIENT_CLOSED, "client_closed_request"
            await request_threads.shield(self.call.cancel())
            raise
        finally:
            await request_threads.shield(_record(meter, status, error_code))


class ChatCompletion(CompletionResponse):
    object_whole, object_chunk, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def __init__(self, call: InferenceCall, model: str, include_usage: bool) -> None:
        super().__init__(call, model, include_usage)
        self.opened: list[dict[int, str]] = [{} for _ in range(call.job.n)]  # per choice: tool call index -> id

    def whole_choice(self, index: int, choice: Choice) -> dict:
        message = {"role": "assistant", "content": choice.text, "refusal": None}
        if choice.tool_calls:
            message["content"] = choice.text or None
            message["tool_calls"] = [choice.tool_calls[k] for k in sorted(choice.tool_calls)]
        logprobs = chat_logprobs(choice.logprobs) if self.logprobs else None
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": choice.reason or "stop"}

    def opening_choice(self, index: int) -> dict:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def _tool_call_delta(self, index: int, piece: dict) -> dict:
        opened = self.opened[index]
        if piece["index"] in opened:
            return {"index": piece["index"], "function": {"arguments": piece["arguments"]}}
        opened[piece["index"]] = call_id = _call_id(piece)
        function = {"name": piece.get("name") or "", "arguments": piece["arguments"]}
        return {"index": piece["index"], "id": call_id, "type": "function", "function": function}

    def delta_choice(self, event: dict) -> dict | None:
        index, delta = event["i"], {}
        if event["t"]:
            delta["content"] = event["t"]
        if event.get("tc"):
            delta["tool_calls"] = [self._tool_call_delta(index, piece) for piece in event["tc"]]
        logprobs = chat_logprobs(event["lp"]) if event.get("lp") else None
        if not delta and logprobs is None:
            return None
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}

    def finish_choice(self, index: int, reason: str) -> dict:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}


class TextCompletion(CompletionResponse):
    """``/v1/completions``; with ``echo`` each choice starts with its prompt."""

    object_whole = object_chunk = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, call: InferenceCall, model: str, include_usage: bool, echoed: list[str]) -> None:
        super().__init__(call, model, include_usage)
        self.echoed = echoed  # per choice: the prompt to repeat, or ""
        self.offsets = [0] * call.job.n  # per choice: characters of logprob tokens sent (for text_offset)

    def whole_choice(self, index: int, choice: Choice) -> dict:
        logprobs = text_logprobs(choice.logprobs, 0) if self.logprobs else None
        text = self.echoed[index] + choice.text
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": choice.reason or "stop"}

    def opening_choice(self, index: int) -> dict | None:
        if not self.echoed[index]:
            return None
        return {"index": index, "text": self.echoed[index], "logprobs": None, "finish_reason": None}

    def delta_choice(self, event: dict) -> dict | None:
        index, entries = event["i"], event.get("lp")
        if not event["t"] and not entries:
            return None
        logprobs = None
        if entries:
            logprobs = text_logprobs(entries, self.offsets[index])
            self.offsets[index] += sum(len(e["token"]) for e in entries)
        return {"index": index, "text": event["t"], "logprobs": logprobs, "finish_reason": None}

    def finish_choice(self, index: int, reason: str) -> dict:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": reason}

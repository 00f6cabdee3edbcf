"""The view side of a request: enqueue it, relay the worker's output, meter it once.

:class:`InferenceCall` opens a reply channel on the Channels layer, enqueues the generation task
on the deployment's Celery queue, waits for a worker to pick it up, then either streams the output
as server-sent events or collects it into one response; :class:`EmbeddingCall` does the same for
embeddings and collects the vectors. Whatever happens, the request's usage record is written
exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest

from accounts.models import ApiKey
from deployments.models import CatalogModel, Deployment
from deployments.presence import worker_alive
from gpucloud.openai_errors import ApiError, service_unavailable
from inference import replies
from inference.engines import ENGINES, EmbeddingJob, GenerationJob
from inference.services import usage_record
from inference.tasks import embed_task, generate_task
from inference.tokens import count_tokens

logger = logging.getLogger(__name__)

SYSTEM_FINGERPRINT = "fp_gpucloud"


def _sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class UsageMeter:
    """Collects what one request used and writes its usage record exactly once."""

    def __init__(self, request: HttpRequest, endpoint: str) -> None:
        self.request = request
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.model: CatalogModel | None = None
        self.model_name = ""
        self.deployment = ""
        self.worker = ""
        self.stream = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._recorded = False

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    async def record(self, status_code: int, error_code: str | None = None) -> None:
        if self._recorded:
            return
        self._recorded = True
        api_key = self.request.api_key
        cost = self.model.cost(self.prompt_tokens, self.completion_tokens) if self.model else 0
        ttft = None if self.first_token_at is None else round((self.first_token_at - self.started) * 1000)
        try:
            await sync_to_async(usage_record)(
                request_id=self.request.request_id,
                user_id=api_key.user_id,
                api_key=api_key,
                endpoint=self.endpoint,
                model=self.model_name,
                deployment=self.deployment,
                worker=self.worker,
                stream=self.stream,
                status_code=status_code,
                error_code=error_code or "",
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                latency_ms=round((time.monotonic() - self.started) * 1000),
                time_to_first_token_ms=ttft,
                cost=cost,
            )
        except Exception:  # metering must never turn a served request into a failure
            logger.exception("Could not record usage for %s", self.request.request_id)


class WorkerLost(Exception):
    """The worker running this request stopped heartbeating."""


# Kombu's Redis priorities: 0 is served first. Key tiers map onto them; a request dispatched again
# after its worker died goes first, since it has waited already.
PRIORITY_BY_TIER = {ApiKey.Priority.HIGH: 0, ApiKey.Priority.STANDARD: 3, ApiKey.Priority.LOW: 6}
RETRY_PRIORITY = 0
LIVENESS_CHECK_SECONDS = 0.5


class QueuedCall:
    """A request on its way through a deployment's queue to a GPU worker and back.

    Opens a reply channel, enqueues ``task`` with :meth:`payload`, and reads the worker's replies
    of the current attempt (:meth:`_next`), watching that the worker stays alive.
    """

    task = None  # the Celery task the job runs as

    def __init__(self, meter: UsageMeter, deployment: Deployment, request_id: str, *, priority: int) -> None:
        self.meter = meter
        self.deployment = deployment
        self.request_id = request_id
        self.priority = priority
        self.layer = get_channel_layer()
        self.channel = ""
        self.attempt = 0
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.reader: asyncio.Task | None = None

    def payload(self) -> dict:
        """The task's job, as plain data."""
        raise NotImplementedError

    async def submit(self) -> None:
        """Enqueue the job and wait until a worker starts it; 503 if none does in time."""
        # The default prefix: channels_redis receives every specific channel of this process from
        # one Redis key per prefix, under one lock, so a second prefix would starve behind consumers'.
        self.channel = await self.layer.new_channel()
        # One reader drains the reply channel into a queue, so waiting with timeouts is cancel-safe.
        self.reader = asyncio.create_task(self._read())
        await self._dispatch(self.priority)
        await self._next(settings.INFERENCE_QUEUE_TIMEOUT, waiting_for_worker=True)

    async def _read(self) -> None:
        while True:
            await self.inbox.put(await self.layer.receive(self.channel))

    async def _dispatch(self, priority: int) -> None:
        self.attempt += 1
        await sync_to_async(replies.attempt_begin)(self.request_id, self.attempt)
        payload = {**self.payload(), "engine": self.deployment.engine, "attempt": self.attempt}
        await sync_to_async(self.task.apply_async, thread_sensitive=False)(
            args=(payload, self.channel), queue=self.deployment.queue_name, priority=priority
        )

    async def _next(self, wait: float, waiting_for_worker: bool = False) -> dict:
        """The current attempt's next message; raises WorkerLost if its worker dies meanwhile."""
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self.cancel()
                if waiting_for_worker:
                    raise service_unavailable(
                        f"No GPU worker picked up the request within {wait:.0f}s: the deployment "
                        f"'{self.deployment.name}' has no free worker. Retry later.",
                        code="no_worker_available",
                    )
                raise ApiError(
                    f"The GPU worker stopped sending output for {wait:.0f}s.",
                    status=504,
                    type="server_error",
                    code="worker_timeout",
                )
            try:
                message = await asyncio.wait_for(self.inbox.get(), min(remaining, LIVENESS_CHECK_SECONDS))
            except TimeoutError:
                if self.meter.worker and not await sync_to_async(worker_alive)(self.meter.worker):
                    raise WorkerLost(self.meter.worker) from None
                continue
            if message.get("attempt") != self.attempt:
                continue  # from a worker this request was taken away from
            if message["type"] == replies.ERROR:
                await self.close()
                status = message.get("status", 502)
                kind = "invalid_request_error" if status < 500 else "server_error"
                raise ApiError(message["message"], status=status, type=kind, code=message["code"])
            if message["type"] == replies.START:
                self.meter.worker = message["worker"]
                if waiting_for_worker:
                    return message
                continue
            return message

    def _check_attempts(self, lost: WorkerLost, restart_visible: bool = False) -> None:
        if self.attempt >= settings.INFERENCE_MAX_ATTEMPTS or restart_visible:
            raise ApiError(
                f"The GPU worker {lost} serving this request went offline. Please retry.",
                status=502,
                type="server_error",
                code="worker_lost",
            )

    async def cancel(self) -> None:
        await sync_to_async(replies.request_cancel)(self.request_id)
        await self.close()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            self.reader = None


class InferenceCall(QueuedCall):
    """One generation request on its way through the queue to a worker and back.

    If the worker dies mid-request, the request is dispatched again. A deterministic engine
    (the same seed gives the same text) lets the new worker's output continue exactly where the
    client's copy ends: the already-delivered prefix of each choice is skipped. With any other
    engine a non-streamed request starts over, and a stream that has sent text ends with an error.
    """

    task = generate_task

    def __init__(
        self, meter: UsageMeter, deployment: Deployment, job: GenerationJob, *, priority: int, stream: bool
    ) -> None:
        super().__init__(meter, deployment, job.request_id, priority=priority)
        self.stream = stream
        self.job = job
        self.resumable = getattr(ENGINES.get(deployment.engine), "deterministic", False)
        self.usage: dict | None = None
        self.delivered = [0] * job.n  # characters of each choice handed to the client
        self.replay = [0] * job.n  # characters the current attempt will repeat, to skip

    def payload(self) -> dict:
        self.job.fast_forward = list(self.replay)
        payload = asdict(self.job)
        payload.pop("finished")
        payload.pop("reported_usage")
        return payload

    async def _redispatch(self, lost: WorkerLost) -> None:
        """Dispatch the request again after its worker died, or raise ApiError if that can't be clean."""
        restart_visible = any(self.delivered) and not self.resumable and self.stream
        try:
            self._check_attempts(lost, restart_visible)
        except ApiError:
            await self.cancel()
            raise
        logger.warning("Worker %s lost while serving %s; dispatching it again", lost, self.job.request_id)
        self.meter.worker = ""
        self.replay = list(self.delivered) if self.resumable else [0] * self.job.n
        await self._dispatch(RETRY_PRIORITY)

    async def events(self) -> AsyncIterator[dict]:
        """Yield the output events, once each, until the worker is done; then ``self.usage`` is set."""
        while True:
            try:
                message = await self._next(settings.INFERENCE_STREAM_TIMEOUT)
            except WorkerLost as lost:
                await self._redispatch(lost)
                if not self.resumable and any(self.delivered):
                    # Not a stream (or _redispatch would have failed): the caller starts over.
                    self.delivered = [0] * self.job.n
                    yield {"reset": True}
                continue
            if message["type"] == replies.DONE:
                self.usage = message["usage"]
                self.meter.prompt_tokens = self.usage["prompt_tokens"]
                self.meter.completion_tokens = self.usage["completion_tokens"]
                await self.close()
                return
            self.meter.mark_first_token()
            for event in message["events"]:
                index, text = event["i"], event["t"]
                if self.replay[index]:
                    skipped = min(self.replay[index], len(text))
                    self.replay[index] -= skipped
                    text = text[skipped:]
                self.delivered[index] += len(text)
                # Provisional count, so a request cut short is still metered; "done" corrects it.
                self.meter.completion_tokens += count_tokens(text)
                yield {"i": index, "t": text, "f": event["f"]}


class EmbeddingCall(QueuedCall):
    """One embeddings request: the worker sends the vectors, then ``done`` with the usage.

    Nothing reaches the client before the end, and embeddings are a pure function of the input,
    so a request whose worker dies is simply dispatched again.
    """

    task = embed_task

    def __init__(self, meter: UsageMeter, deployment: Deployment, job: EmbeddingJob, *, priority: int) -> None:
        super().__init__(meter, deployment, job.request_id, priority=priority)
        self.job = job

    def payload(self) -> dict:
        return asdict(self.job)

    async def result(self) -> tuple[list[bytes], dict]:
        """Each input's vector as little-endian float32 bytes, and the usage."""
        while True:
            vectors: list[bytes] = [b""] * len(self.job.texts)
            try:
                while True:
                    message = await self._next(settings.INFERENCE_STREAM_TIMEOUT)
                    if message["type"] == replies.DONE:
                        await self.close()
                        usage = message["usage"]
                        self.meter.prompt_tokens = usage["prompt_tokens"]
                        self.meter.completion_tokens = 0
                        return vectors, usage
                    if message["type"] == replies.VECTORS:
                        self.meter.mark_first_token()
                        size = 4 * message["dimensions"]
                        data = message["data"]
                        for i in range(message["count"]):
                            vectors[message["offset"] + i] = data[i * size : (i + 1) * size]
            except WorkerLost as lost:
                try:
                    self._check_attempts(lost)
                except ApiError:
                    await self.cancel()
                    raise
                logger.warning("Worker %s lost while embedding %s; dispatching it again", lost, self.request_id)
                self.meter.worker = ""
                await self._dispatch(RETRY_PRIORITY)


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
        n = self.call.job.n
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
            await self.call.meter.record(error.status, error.code)
            raise
        await self.call.meter.record(200)
        choices = [self.whole_choice(i, text, reasons[i] or "stop") for i, text in enumerate(texts)]
        return {**self._envelope(self.object_whole, choices), "usage": self.call.usage}

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
                if self.include_usage:
                    yield _sse({**self._chunk([]), "usage": self.call.usage})
            yield _sse("[DONE]")
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: stop the worker, and meter what was produced so far.
            status, error_code = 499, "client_closed_request"
            await asyncio.shield(self.call.cancel())
            raise
        finally:
            await asyncio.shield(meter.record(status, error_code))


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

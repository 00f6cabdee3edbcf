"""Retry and replay: a generation or embeddings call that survives the loss of its node.

If the node running a request goes away, the request is dispatched again. A deterministic engine
(the same seed gives the same text) lets the new node's output continue exactly where the
client's copy ends: the already-delivered prefix of each choice is skipped. With any other
engine a non-streamed request starts over, and a stream that has sent text ends with an error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from django.conf import settings

from deployments.models import Deployment
from inference import replies
from inference.metering import UsageMeter
from inference.transport import QueuedCall, WorkerLost
from marketplace import verification
from nodeprotocol import DETERMINISTIC_ENGINES, KIND_EMBED, KIND_GENERATE, EmbeddingJob, GenerationJob
from nodeprotocol.tokens import count_tokens
from observability import metrics

logger = logging.getLogger(__name__)


class InferenceCall(QueuedCall):
    """One generation request (chat or completions) on its way to a node and back."""

    kind = KIND_GENERATE

    def __init__(
        self, meter: UsageMeter, deployment: Deployment, job: GenerationJob, *, priority: int, stream: bool
    ) -> None:
        super().__init__(meter, deployment, job.request_id, priority=priority)
        self.stream = stream
        self.job = job
        # Replay skips characters of text; log probabilities and tool calls are not cut that way,
        # so a request asking for them starts over instead (or, streamed and begun, fails).
        self.resumable = deployment.engine in DETERMINISTIC_ENGINES and not job.tools and not job.logprobs
        self.usage: dict | None = None
        self.delivered = [0] * job.n  # characters of each choice handed to the client
        self.replay = [0] * job.n  # characters the current attempt will repeat, to skip
        # What the client got, kept for a verification re-run only where one may come (marketplace).
        self.texts = [""] * job.n if verification.eligible(job) else None

    def spec(self) -> dict:
        self.job.fast_forward = list(self.replay)
        return self.job.to_wire()

    def limits(self) -> dict:
        return {"prompt_tokens": self.job.prompt_tokens, "completion_tokens": self.job.n * self.job.max_tokens}

    async def _continue_elsewhere(self, lost: WorkerLost) -> None:
        restart_visible = any(self.delivered) and not self.resumable and self.stream
        self.replay = list(self.delivered) if self.resumable else [0] * self.job.n
        await self.redispatch(lost, restart_visible=restart_visible)

    async def events(self) -> AsyncIterator[dict]:
        """Yield the output events, once each, until the node is done; then ``self.usage`` is set."""
        while True:
            try:
                message = await self._next(settings.INFERENCE_STREAM_TIMEOUT)
            except WorkerLost as lost:
                await self._continue_elsewhere(lost)
                if not self.resumable and any(self.delivered):
                    # Not a stream (or redispatch would have failed): the caller starts over.
                    self.delivered = [0] * self.job.n
                    self.meter.produced = {}  # the client gets none of the lost node's text
                    self.texts = self.texts and [""] * self.job.n
                    yield {"reset": True}
                continue
            if message["type"] == replies.DONE:
                self.usage = message["usage"]
                self.meter.prompt_tokens = self.usage["prompt_tokens"]
                self.meter.completion_tokens = self.usage["completion_tokens"]
                await self.close()
                verification.consider(self)  # GPU host marketplace: maybe re-run it on a trusted node
                return
            if message["type"] != replies.EVENTS:
                continue
            self.meter.mark_first_token()
            metrics.output_arrived(self.meter, message["events"])
            for event in message["events"]:
                index, text = event["i"], event["t"]
                if self.replay[index]:
                    skipped = min(self.replay[index], len(text))
                    self.replay[index] -= skipped
                    text = text[skipped:]
                pieces = event.get("tc") or []
                arguments = "".join(piece["arguments"] for piece in pieces)
                self.delivered[index] += len(text) + len(arguments) + len(pieces)
                if self.texts is not None:  # what a verification re-run must reproduce, tool calls included
                    self.texts[index] += text + arguments
                # Provisional count, so a request cut short is still metered; "done" corrects it.
                tokens = count_tokens(text) + count_tokens(arguments)
                self.meter.completion_tokens += tokens
                worker = self.meter.worker  # who produced it, for its host's earnings
                self.meter.produced[worker] = self.meter.produced.get(worker, 0) + tokens
                yield {"i": index, "t": text, "f": event["f"], "lp": event.get("lp"), "tc": pieces}


class EmbeddingCall(QueuedCall):
    """One embeddings request: the node sends the vectors, then ``done`` with the usage.

    Nothing reaches the client before the end, and embeddings are a pure function of the input,
    so a request whose node goes away is simply dispatched again.
    """

    kind = KIND_EMBED

    def __init__(self, meter: UsageMeter, deployment: Deployment, job: EmbeddingJob, *, priority: int) -> None:
        super().__init__(meter, deployment, job.request_id, priority=priority)
        self.job = job

    def spec(self) -> dict:
        return self.job.to_wire()

    def limits(self) -> dict:
        return {"prompt_tokens": self.meter.prompt_tokens, "completion_tokens": 0}

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
                await self.redispatch(lost)

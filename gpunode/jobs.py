"""Running one job the platform handed this node, and sending its output back.

Output goes out as ``job.events`` batches (every ``FLUSH_SECONDS`` or at a choice's end, so a
fast engine does not send one message per token), or ``job.vectors`` for embeddings, and ends
with ``job.done`` (the usage) or ``job.error``. Sending waits for the socket: a slow reader slows
the engine down, it never drops output.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable

from gpunode.engines import EngineUnavailable
from gpunode.generation import generate
from gpunode.replicas import Replicas
from nodeprotocol import (
    JOB_DONE,
    JOB_ERROR,
    JOB_EVENTS,
    JOB_VECTORS,
    KIND_EMBED,
    KIND_GENERATE,
    VECTORS_MESSAGE_BYTES,
    EmbeddingJob,
    GenerationJob,
)
from nodeprotocol.jobs import pack_vectors

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.03
ENGINE_ERROR = "The model's engine failed while serving this request. Please retry."

Send = Callable[[dict], Awaitable[None]]


class OutputLost(Exception):
    """The connection to the platform dropped: nobody can receive this job's output any more."""


class JobOutput:
    """Batches one job's output into protocol messages."""

    def __init__(self, send: Send, job_id: str) -> None:
        self.send = send
        self.job_id = job_id
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()

    async def emit(self, index: int, text: str, finish_reason: str | None, extra: dict | None = None) -> None:
        """Text (with ``extra``: its log probabilities "lp", tool-call pieces "tc") for choice ``index``."""
        self.pending.append({"i": index, "t": text, "f": finish_reason, **(extra or {})})
        if finish_reason is not None or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            events, self.pending = self.pending, []
            await self.send({"type": JOB_EVENTS, "job": self.job_id, "events": events})
        self.last_flush = time.monotonic()

    async def vectors(self, vectors: list[list[float]]) -> None:
        dimensions = len(vectors[0])
        per_message = max(1, VECTORS_MESSAGE_BYTES // (4 * dimensions))
        for offset in range(0, len(vectors), per_message):
            part = vectors[offset : offset + per_message]
            await self.send(
                {
                    "type": JOB_VECTORS,
                    "job": self.job_id,
                    "offset": offset,
                    "count": len(part),
                    "dimensions": dimensions,
                    "data": base64.b64encode(pack_vectors(part)).decode("ascii"),
                }
            )

    async def done(self, prompt_tokens: int, completion_tokens: int) -> None:
        await self.flush()
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        await self.send({"type": JOB_DONE, "job": self.job_id, "usage": usage})

    async def error(self, message: str, code: str, status: int = 502, *, engine_fault: bool = False) -> None:
        """End with an error, after the output produced so far (the client keeps what it got)."""
        await self.flush()
        await self.send(
            {
                "type": JOB_ERROR,
                "job": self.job_id,
                "message": message,
                "code": code,
                "status": status,
                "engine_fault": engine_fault,
            }
        )


async def run_job(message: dict, replicas: Replicas, send: Send) -> None:
    """Run the job in ``message`` (a ``job`` message) on its replica's engine; always ends with done or error."""
    output = JobOutput(send, message["job"])
    replica_id = str(message.get("replica"))
    engine = replicas.engine(replica_id)
    if engine is None:
        await output.error(
            "The node given this request no longer serves its model. Please retry.", "replica_not_loaded", 503
        )
        return
    try:
        if message["kind"] == KIND_GENERATE:
            job = GenerationJob.from_wire(message["spec"])
            result = await generate(engine, job, output.emit)
            await output.done(result.prompt_tokens, result.completion_tokens)
        elif message["kind"] == KIND_EMBED:
            job = EmbeddingJob.from_wire(message["spec"])
            vectors, prompt_tokens = await engine.embed(job.texts, model=job.model)
            if len(vectors) != len(job.texts) or not vectors or len({len(v) for v in vectors}) != 1 or not vectors[0]:
                raise RuntimeError(f"the engine returned {len(vectors)} malformed vectors for {len(job.texts)} inputs")
            await output.vectors(vectors)
            await output.done(prompt_tokens, 0)
        else:
            await output.error(f"This node does not run jobs of kind {message['kind']!r}.", "unsupported_job", 400)
        return
    except (asyncio.CancelledError, OutputLost):
        raise
    except EngineUnavailable as error:
        logger.warning("Engine unavailable for job %s: %s", message["job"], error)
        if error.status < 500:  # the engine (an upstream) refused this request: the client's to fix
            await output.error(str(error), error.code, error.status)
            return
        failure, client_error = str(error), (str(error), error.code, error.status)
    except Exception as error:
        logger.exception("Engine failure on job %s", message["job"])
        failure, client_error = f"{type(error).__name__}: {error}", None
    # Whose fault was it? One request's content must never take a replica down for everyone, so
    # the engine's own health check decides, not the count of failed requests.
    if await replicas.healthy(replica_id):
        message_text, code, status = client_error or (
            "The model's engine could not process this request's input. Check it for unusual content and retry.",
            "engine_rejected_input",
            400,
        )
        await output.error(message_text, code, status)
    else:
        replicas.mark_failed(replica_id, failure)
        message_text, code, status = client_error or (ENGINE_ERROR, "engine_error", 502)
        await output.error(message_text, code, status, engine_fault=True)

"""Celery tasks run by GPU workers (``manage.py gpuworker``)."""

from __future__ import annotations

import asyncio
import logging

from celery import shared_task
from channels.layers import get_channel_layer

from inference.engines import EmbeddingJob, EngineUnavailable, GenerationJob, UnknownEngine, get_engine
from inference.generation import generate
from inference.replies import ReplySender, RequestCancelled, attempt_is_current
from inference.worker import node_name, record_engine_outcome

logger = logging.getLogger(__name__)


async def _serve(request_id: str, attempt: int, reply_channel: str, worker: str, queue: str, work) -> None:
    """Run ``work(sender)`` for the current attempt of a request, turning failures into error replies.

    Engine failures (not the client's) also feed the health of the replica serving ``queue``.
    """
    if not attempt_is_current(request_id, attempt):
        logger.info("Skipping %s: cancelled, or dispatched again elsewhere", request_id)
        return
    sender = ReplySender(get_channel_layer(), reply_channel, request_id, attempt)
    await sender.start(worker)
    failure = None
    try:
        await work(sender)
    except RequestCancelled:
        logger.info("Stopped %s: cancelled, or dispatched again elsewhere", request_id)
    except UnknownEngine as error:
        failure = str(error)
        await sender.error(failure, "engine_unavailable")
    except EngineUnavailable as error:
        # Clear by design (an upstream down, the ML extras missing): the client sees the reason.
        logger.warning("Engine unavailable for %s: %s", request_id, error)
        if error.status >= 500:
            failure = str(error)
        await sender.error(str(error), error.code, error.status)
    except Exception as error:
        logger.exception("Engine failure on %s", request_id)
        failure = f"{type(error).__name__}: {error}"
        await sender.error("The model's engine failed while serving this request. Please retry.", "engine_error")
    record_engine_outcome(queue, failure)


async def run_generation(job_data: dict, reply_channel: str, worker: str, queue: str = "") -> None:
    """Run one generation request on this worker and send its output to ``reply_channel``."""
    job = GenerationJob.from_dict(job_data)

    async def work(sender: ReplySender) -> None:
        engine = get_engine(job_data["engine"], job.engine_config)
        result = await generate(engine, job, sender.emit)
        await sender.done(
            {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            }
        )

    await _serve(job.request_id, job_data["attempt"], reply_channel, worker, queue, work)


async def run_embedding(job_data: dict, reply_channel: str, worker: str, queue: str = "") -> None:
    """Embed one request's inputs on this worker and send the vectors to ``reply_channel``."""
    job = EmbeddingJob.from_dict(job_data)

    async def work(sender: ReplySender) -> None:
        engine = get_engine(job_data["engine"], job.engine_config)
        vectors, prompt_tokens = await engine.embed(job.texts, model=job.model)
        if len(vectors) != len(job.texts) or not vectors or len({len(v) for v in vectors}) != 1 or not vectors[0]:
            raise RuntimeError(f"the engine returned {len(vectors)} malformed vectors for {len(job.texts)} inputs")
        await sender.vectors(vectors)
        await sender.done({"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens})

    await _serve(job.request_id, job_data["attempt"], reply_channel, worker, queue, work)


def _queue(task) -> str:
    return (task.request.delivery_info or {}).get("routing_key") or ""


@shared_task(name="inference.generate", bind=True)
def generate_task(self, job: dict, reply_channel: str) -> None:
    asyncio.run(run_generation(job, reply_channel, node_name() or self.request.hostname, _queue(self)))


@shared_task(name="inference.embed", bind=True)
def embed_task(self, job: dict, reply_channel: str) -> None:
    asyncio.run(run_embedding(job, reply_channel, node_name() or self.request.hostname, _queue(self)))

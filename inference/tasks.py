"""Celery tasks run by GPU workers (``manage.py gpuworker``)."""

from __future__ import annotations

import asyncio
import logging

from celery import shared_task
from channels.layers import get_channel_layer

from inference.engines import GenerationJob, UnknownEngine, get_engine
from inference.generation import generate
from inference.replies import ReplySender, RequestCancelled, attempt_is_current
from inference.worker import node_name

logger = logging.getLogger(__name__)


async def run_generation(job_data: dict, reply_channel: str, worker: str) -> None:
    """Run one request on this worker and send its output to ``reply_channel``."""
    job = GenerationJob.from_dict(job_data)
    attempt = job_data["attempt"]
    if not attempt_is_current(job.request_id, attempt):
        logger.info("Skipping %s: cancelled, or dispatched again elsewhere", job.request_id)
        return
    sender = ReplySender(get_channel_layer(), reply_channel, job.request_id, attempt)
    await sender.start(worker)
    try:
        engine = get_engine(job_data["engine"])
        result = await generate(engine, job, sender.emit)
        await sender.done(
            {
                "prompt_tokens": job.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": job.prompt_tokens + result.completion_tokens,
            }
        )
    except RequestCancelled:
        logger.info("Stopped %s: cancelled, or dispatched again elsewhere", job.request_id)
    except UnknownEngine as error:
        await sender.error(str(error), "engine_unavailable")
    except Exception:
        logger.exception("Engine failure on %s", job.request_id)
        await sender.error("The model's engine failed while generating. Please retry.", "engine_error")


@shared_task(name="inference.generate", bind=True)
def generate_task(self, job: dict, reply_channel: str) -> None:
    asyncio.run(run_generation(job, reply_channel, worker=node_name() or self.request.hostname))

"""The deployments' job queues: Celery queues on Redis, one per deployment, with priorities.

Views enqueue a job as the Celery task ``inference.job`` on its deployment's queue, with the
key's priority. No Celery worker executes it: the dispatcher of a node with a free slot pops it
(:func:`pop`) and hands it to that node over its socket. Popping reads kombu's Redis layout — a
list per queue and priority step, ``<queue>`` for 0 and ``<queue><sep><step>`` for the others —
in kombu's own order (every queue's most urgent list first), with BRPOP, as a Celery worker
would. So a job leaves the queue only for a node that can start it now, and a waiting job stays
in Redis for whichever node frees a slot first.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass

from django.conf import settings

from gpucloud.celery import app

logger = logging.getLogger(__name__)

TASK_NAME = "inference.job"


@dataclass(frozen=True)
class QueuedJob:
    """A job as the dispatcher pops it: what the view put in, and the queue it came from."""

    queue: str
    request_id: str
    attempt: int
    kind: str
    spec: dict
    reply_channel: str
    # What the node may bill at most, as the view counted it: {"prompt_tokens", "completion_tokens"}.
    limits: dict


def enqueue(
    *,
    queue: str,
    priority: int,
    request_id: str,
    attempt: int,
    kind: str,
    spec: dict,
    reply_channel: str,
    limits: dict,
) -> None:
    """Put a job on a deployment's queue (blocking: call it off the event loop)."""
    job = {
        "request_id": request_id,
        "attempt": attempt,
        "kind": kind,
        "spec": spec,
        "reply_channel": reply_channel,
        "limits": limits,
    }
    app.send_task(TASK_NAME, args=(job,), queue=queue, priority=priority)


def _transport_options() -> tuple[list[int], str]:
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    return sorted(options.get("priority_steps", [0, 3, 6, 9])), options.get("sep", "\x06\x16")


def priority_keys(queues: list[str]) -> list[str]:
    """The Redis lists of ``queues`` in the order a job is taken: priority first, then queue."""
    steps, sep = _transport_options()
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in steps for queue in queues]


def queue_of(key: str) -> str:
    """The queue a priority list belongs to."""
    steps, sep = _transport_options()
    queue, found, step = key.rpartition(sep)
    return queue if found and step.isdigit() and int(step) in steps else key


def decode(key: str, raw: bytes) -> QueuedJob | None:
    """The job in a Celery message popped from ``key``; None (logged) for anything else."""
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != TASK_NAME:
            raise ValueError(f"task {message.get('headers', {}).get('task')!r}")
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        job = args[0]
        return QueuedJob(
            queue=queue_of(key),
            request_id=str(job["request_id"]),
            attempt=int(job["attempt"]),
            kind=str(job["kind"]),
            spec=dict(job["spec"]),
            reply_channel=str(job["reply_channel"]),
            limits={k: int(v) for k, v in dict(job["limits"]).items()},
        )
    except (ValueError, KeyError, TypeError, IndexError) as error:
        logger.error("Dropped a message on %s that is not a job (%s)", key, error)
        return None

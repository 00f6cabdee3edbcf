"""The deployments' job queues: Celery queues on Redis, per deployment and account, with priorities.

Views enqueue a job as the Celery task ``inference.job`` with the key's priority, on the queue of
its deployment and account (``deployment.<name>.a<account id>``), and note that queue as active
for the deployment (a sorted set, by time). No Celery worker executes it: the dispatcher of a node
with a free slot pops it (:func:`active_accounts`, :func:`take_keys`, then BRPOP) and hands it to
that node over its socket.
Popping reads kombu's Redis layout — a list per queue and priority step, ``<queue>`` for 0 and
``<queue><sep><step>`` for the others — most urgent priority first, as a Celery worker would; within
a priority the accounts take turns (the dispatcher rotates their order on every pop), so a burst
from one account does not queue everyone else behind it. A job leaves the queue only for a node
that can start it now, and a waiting job stays in Redis for whichever node frees a slot first.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings

from gpucloud.celery import app
from gpucloud.redis_client import get_redis

logger = logging.getLogger(__name__)

TASK_NAME = "inference.job"
# Pushed on a deployment's own list when an account starts queueing for it.
WAKE = b"wake"


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


# GPU host marketplace: the jobs of trusted_only keys go on an account queue of their own, with
# this suffix, which the dispatchers of community nodes never pop.
TRUSTED_ONLY_SUFFIX = ".trusted"


def account_queue(queue: str, account_id: int, trusted_only: bool = False) -> str:
    """An account's own queue of a deployment (its trusted-only one for ``trusted_only`` jobs)."""
    return f"{queue}.a{account_id}{TRUSTED_ONLY_SUFFIX if trusted_only else ''}"


def trusted_only(account_queue_name: str) -> bool:
    """Whether an account queue holds jobs that only trusted nodes may take."""
    return account_queue_name.endswith(TRUSTED_ONLY_SUFFIX)


def _active_key(queue: str) -> str:
    return f"gpucloud:active:{queue}"


def _active_window() -> float:
    """How long an account queue counts as active after its last job: longer than any job waits."""
    return settings.INFERENCE_QUEUE_TIMEOUT + 60


def enqueue(
    *,
    queue: str,
    account: int,
    priority: int,
    request_id: str,
    attempt: int,
    kind: str,
    spec: dict,
    reply_channel: str,
    limits: dict,
    trusted_only: bool = False,
) -> None:
    """Put a job on its deployment's queue for ``account`` (blocking: call it off the event loop);
    ``trusted_only``: on the account's queue that only trusted nodes take from."""
    job = {
        "request_id": request_id,
        "attempt": attempt,
        "kind": kind,
        "spec": spec,
        "reply_channel": reply_channel,
        "limits": limits,
        # When it joined the queue: how long requests wait drives autoscaling (oldest_wait).
        "queued_at": time.time(),
    }
    own = account_queue(queue, account, trusted_only)
    now = time.time()
    pipe = get_redis().pipeline(transaction=False)
    pipe.zremrangebyscore(_active_key(queue), "-inf", now - _active_window())
    pipe.zadd(_active_key(queue), {own: now})
    newly_active = pipe.execute()[1]
    app.send_task(TASK_NAME, args=(job,), queue=own, priority=priority)
    if newly_active:
        # Dispatchers blocked on the lists they knew wake up and look again (they always watch
        # the deployment's own list).
        get_redis().lpush(queue, WAKE)


async def active_accounts(redis, queues: list[str]) -> list[str]:
    """The account queues of ``queues`` that had jobs within the active window."""
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        pipe.zrangebyscore(_active_key(queue), time.time() - _active_window(), "+inf")
    return sorted(m.decode() for found in await pipe.execute() for m in found)


def take_keys(accounts: list[str], queues: list[str], turn: int) -> list[str]:
    """The lists to BRPOP for a node serving ``queues``: priority first; within it, the
    ``accounts`` take turns (``turn`` rotates their order); last, the deployments' own lists,
    where wake-ups come."""
    if accounts:
        turn %= len(accounts)
        accounts = accounts[turn:] + accounts[:turn]
    return [*priority_keys(accounts), *queues]


def waiting(queue: str) -> int:
    """Jobs waiting on a deployment's queues, over every account and priority."""
    redis = get_redis()
    accounts = [m.decode() for m in redis.zrangebyscore(_active_key(queue), time.time() - _active_window(), "+inf")]
    pipe = redis.pipeline(transaction=False)
    for key in priority_keys(accounts):
        pipe.llen(key)
    return sum(pipe.execute())


def oldest_wait(queue: str, now: float | None = None) -> float:
    """Seconds the longest-waiting job on a deployment's queues has waited (0: none waits).

    Kombu pushes on the left and a dispatcher pops on the right, so each list's oldest job is its last.
    """
    redis = get_redis()
    accounts = [m.decode() for m in redis.zrangebyscore(_active_key(queue), time.time() - _active_window(), "+inf")]
    pipe = redis.pipeline(transaction=False)
    for key in priority_keys(accounts):
        pipe.lindex(key, -1)
    oldest = None
    for raw in pipe.execute():
        queued_at = _queued_at(raw) if raw else None
        if queued_at is not None and (oldest is None or queued_at < oldest):
            oldest = queued_at
    return 0.0 if oldest is None else max(0.0, (time.time() if now is None else now) - oldest)


def _queued_at(raw: bytes) -> float | None:
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        value = json.loads(body)[0][0].get("queued_at")
        return float(value) if value is not None else None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def _transport_options() -> tuple[list[int], str]:
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    return sorted(options.get("priority_steps", [0, 3, 6, 9])), options.get("sep", "\x06\x16")


def priority_keys(queues: list[str]) -> list[str]:
    """The Redis lists of ``queues`` in the order a job is taken: priority first, then queue."""
    steps, sep = _transport_options()
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in steps for queue in queues]


def queue_of(key: str) -> str:
    """The deployment queue a list belongs to (without its priority step and account)."""
    steps, sep = _transport_options()
    queue, found, step = key.rpartition(sep)
    queue = queue if found and step.isdigit() and int(step) in steps else key
    queue = queue.removesuffix(TRUSTED_ONLY_SUFFIX)
    base, dot, account = queue.rpartition(".a")
    return base if dot and account.isdigit() else queue


def decode(key: str, raw: bytes) -> QueuedJob | None:
    """The job in a Celery message popped from ``key``; None for a wake-up, and (logged) for anything else."""
    if raw == WAKE:
        return None
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

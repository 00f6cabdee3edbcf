"""Requests in flight per web process, so a process that dies leaves nothing unmetered.

Each web process keeps a key alive in Redis (``gpucloud:web:<process>``, renewed every second by
its liveness thread, gone ``PROCESS_TTL_MS`` after the process dies) and a *journal* of its
requests in flight: what their usage record needs (key, model, endpoint, reservation, …). The
process is its Channels layer's ``client_prefix``, which every reply channel it opens carries, so
whoever holds a request's job can tell whether the view waiting for it is still there.

When a view's process dies:

* the dispatcher running its job (in any surviving process) notices within a second (the keeper of
  :class:`inference.dispatcher.NodeDispatcher`), stops the job on its node and settles the request
  with the tokens it had relayed (:func:`settle_orphan`), status 499 ``web_process_lost``;
* requests that had no job running are settled at recovery by any surviving process's keeper
  (:func:`reap`), with what they had (nothing generated).

Settling is idempotent per request id, so a request finished by its own view a moment before its
process died is never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from decimal import Decimal

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from gpucloud.redis_client import get_async_redis
from inference import liveness
from observability import metrics

logger = logging.getLogger(__name__)

PROCESS_TTL_MS = 5_000
REAP_EVERY_SECONDS = 30.0
# A dead process's journal is reaped only after this long, so dispatchers settle running jobs first.
REAP_AFTER_SECONDS = 20.0
STATUS_PROCESS_LOST = 499
CODE_PROCESS_LOST = "web_process_lost"

_keepers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


def process_of(reply_channel: str) -> str:
    """The web process a reply channel belongs to (its layer's client prefix)."""
    return reply_channel.partition("!")[0].rpartition(".")[2]


def _alive_key(process: str) -> str:
    return f"gpucloud:web:{process}"


def _journal_key(process: str) -> str:
    return f"gpucloud:journal:{process}"


# Every web process ever seen, with when it was last alive: a process is dead only if it was seen.
SEEN_KEY = "gpucloud:web-seen"


def this_process() -> str:
    return get_channel_layer().client_prefix


async def ensure_kept_alive() -> None:
    """Mark this process alive now, and keep it so: its key is renewed every second by the
    liveness thread (:mod:`inference.liveness`), which a busy event loop cannot hold up; dead
    processes' journals are reaped from the loop (once per event loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _keepers or _keepers[loop].done():
        process = this_process()
        pipe = get_async_redis().pipeline(transaction=False)
        beat_queue(pipe, process, time.time())
        await pipe.execute()
        liveness.liveness().process = process
        _keepers[loop] = asyncio.create_task(_reap_now_and_then(), name="web-process-reaper")


def beat_queue(pipe, process: str, now: float) -> None:
    """Queue on a pipeline: ``process`` is alive at ``now`` (a Unix time)."""
    pipe.set(_alive_key(process), int(now), px=PROCESS_TTL_MS)
    pipe.hset(SEEN_KEY, process, int(now))


async def _reap_now_and_then() -> None:
    while True:
        try:
            await reap()
        except RedisError as error:  # Redis is down: the next turn reaps
            logger.debug("Could not reap dead web processes' journals: %s", error)
        except Exception:
            logger.exception("The reaper of dead web processes' journals failed; it carries on")
        await asyncio.sleep(REAP_EVERY_SECONDS)


async def open_entry(request_id: str, entry: dict) -> None:
    """Journal a request of this process as in flight."""
    await ensure_kept_alive()
    entry = {**entry, "at": time.time()}
    await get_async_redis().hset(_journal_key(this_process()), request_id, json.dumps(entry, default=str))


async def close_entry(request_id: str) -> None:
    with contextlib.suppress(RedisError):
        await get_async_redis().hdel(_journal_key(this_process()), request_id)


async def dead(processes: set[str]) -> set[str]:
    """Which of ``processes`` were seen alive and are no longer (never this one, which is running
    this: its key may lapse while its keeper is late under load)."""
    processes = sorted(set(processes) - {this_process()})
    if not processes:
        return set()
    pipe = get_async_redis().pipeline(transaction=False)
    pipe.mget([_alive_key(p) for p in processes])
    pipe.hmget(SEEN_KEY, processes)
    alive, seen = await pipe.execute()
    return {p for p, a, s in zip(processes, alive, seen, strict=True) if a is None and s is not None}


async def settle_orphan(process: str, request_id: str, *, completion_tokens: int, worker: str = "") -> None:
    """Settle a request whose view's process died, with what it had produced."""
    raw = await get_async_redis().hget(_journal_key(process), request_id)
    if raw is None:
        return  # its view finished it, or another survivor did
    entry = json.loads(raw)
    record = await sync_to_async(_settle, thread_sensitive=False)(request_id, entry, completion_tokens, worker)
    await get_async_redis().hdel(_journal_key(process), request_id)
    if record is None:
        logger.warning("Dropped %s, whose web process %s died: its account no longer exists", request_id, process)
        return
    metrics.orphan_settled(record)
    logger.warning("Settled %s, whose web process %s died, at %d tokens", request_id, process, completion_tokens)


def _settle(request_id: str, entry: dict, completion_tokens: int, worker: str):
    from django.contrib.auth import get_user_model

    from accounts.models import ApiKey
    from billing.admission import Reservation, settle
    from inference.services import usage_record

    if not get_user_model().objects.filter(pk=entry["user"]).exists():
        return None  # the account was deleted since: nothing left to bill or record it against

    fields = {
        "endpoint": entry["endpoint"],
        "model": entry["model"],
        "deployment": entry["deployment"],
        "worker": worker,
        "stream": entry["stream"],
        "status_code": STATUS_PROCESS_LOST,
        "error_code": CODE_PROCESS_LOST,
        "latency_ms": round((time.time() - entry["at"]) * 1000),
        "time_to_first_token_ms": None,
    }
    # What reached the client of a stream is billed; a whole answer that never left is not.
    charge = entry["stream"] and completion_tokens > 0
    if entry.get("reservation"):
        reservation = {**entry["reservation"], "worst_case": Decimal(entry["reservation"]["worst_case"])}
        return settle(
            Reservation(**reservation),
            prompt_tokens=entry["prompt_tokens"],
            completion_tokens=completion_tokens,
            charge=charge,
            **fields,
        )
    else:
        api_key = ApiKey.objects.filter(pk=entry["api_key"]).first()
        return usage_record(
            request_id=request_id,
            user_id=entry["user"],
            api_key=api_key,
            prompt_tokens=entry["prompt_tokens"],
            completion_tokens=completion_tokens,
            cost=0,
            **fields,
        )


async def reap() -> None:
    """Settle what processes dead for a while left in their journals (every live process's keeper
    calls this; the wait lets dispatchers settle running jobs, with their tokens, first)."""
    redis = get_async_redis()
    seen = {p.decode(): int(t) for p, t in (await redis.hgetall(SEEN_KEY)).items()}
    for process in await dead(set(seen)):
        if time.time() - seen[process] < REAP_AFTER_SECONDS:
            continue
        for request_id in await redis.hkeys(_journal_key(process)):
            await settle_orphan(process, request_id.decode(), completion_tokens=0)
        await redis.hdel(SEEN_KEY, process)

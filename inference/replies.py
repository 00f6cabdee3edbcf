"""Between the dispatcher and the view waiting for a request: reply messages and request state.

Both sides run on the server. The view opens a reply channel on the Channels layer and puts its
name in the queued job. The dispatcher that hands the job to a node (``inference.dispatcher``, in
the web process holding that node's socket) sends to it, in order:

* ``job.dispatched`` -- ``{"node", "session", "job"}``: which node got it, and the channel of the
  session that can cancel it;
* ``job.events`` -- ``{"events": [{"i": choice, "t": text, "f": finish_reason|None}, ...]}``;
* ``job.vectors`` -- for embeddings: ``{"offset", "count", "dimensions", "data": bytes}``;
* ``job.done`` -- ``{"usage": {...}}``; or ``job.error`` -- ``{"message", "code", "status"}``;
* ``job.lost`` -- the node's connection closed with the job unfinished: dispatch it again.

Every message carries the ``attempt`` it belongs to. Redis keeps, per request, its current
attempt (0: cancelled), so a job popped after it was dispatched again, or after the client went
away, is dropped; and a *lease* that the dispatcher of the node running the attempt renews
every second, all of the node's leases in one round trip, while the node is heard from: a lease
that lapses (a dead web process) or is dropped (a node silent for ``WORKER_OFFLINE_AFTER``) tells
the view the job is lost.
"""

from __future__ import annotations

from django.conf import settings

from gpucloud.redis_client import get_async_redis

DISPATCHED, EVENTS, VECTORS, DONE, ERROR, LOST = (
    "job.dispatched",
    "job.events",
    "job.vectors",
    "job.done",
    "job.error",
    "job.lost",
)
STATE_TTL_SECONDS = 6 * 3600
CANCELLED = 0


def _state_key(request_id: str) -> str:
    return f"gpucloud:request:{request_id}"


def _lease_key(request_id: str) -> str:
    return f"gpucloud:lease:{request_id}"


async def attempt_begin(request_id: str, attempt: int) -> None:
    await get_async_redis().set(_state_key(request_id), attempt, ex=STATE_TTL_SECONDS)


async def request_cancel(request_id: str) -> None:
    await attempt_begin(request_id, CANCELLED)


async def attempt_is_current(request_id: str, attempt: int) -> bool:
    current = await get_async_redis().get(_state_key(request_id))
    return current is not None and int(current) == attempt


def lease_ms() -> int:
    """How long an attempt's lease outlives its last renewal (``INFERENCE_LEASE_SECONDS``)."""
    return round(settings.INFERENCE_LEASE_SECONDS * 1000)


def leases_renew_queue(pipe, leases: dict[str, int]) -> None:
    """Queue, on a pipeline, the renewal of the leases of the attempts a node is running
    (``{request_id: attempt}``): one script for all of them, and only attempts still current, so a
    node that wakes up after its jobs went elsewhere cannot take their leases back."""
    if not leases:
        return
    keys, attempts = [], []
    for request_id, attempt in leases.items():
        keys += [_state_key(request_id), _lease_key(request_id)]
        attempts.append(attempt)
    pipe.eval(_RENEW, len(keys), *keys, lease_ms(), *attempts)


async def leases_renew(leases: dict[str, int]) -> None:
    """Renew the leases of the attempts a node is running, in one round trip."""
    if not leases:
        return
    pipe = get_async_redis().pipeline(transaction=False)
    leases_renew_queue(pipe, leases)
    await pipe.execute()


def leases_drop_queue(pipe, leases: dict[str, int]) -> None:
    """Queue, on a pipeline: the node running these attempts fell silent, their leases lapse now,
    so their views dispatch them again at once (only attempts whose lease they still are)."""
    if leases:
        keys = [_lease_key(request_id) for request_id in leases]
        pipe.eval(_DROP, len(keys), *keys, *leases.values())


# After its job ends, an attempt's lease is kept a little longer: the job's last message may still
# be on its way to the view, which must not take the missing lease for a lost node meanwhile.
ENDED_LEASE_MS = 30_000


async def lease_release(request_id: str, attempt: int) -> None:
    """An attempt's job ended: its lease runs out soon, unless a newer attempt holds it already."""
    await get_async_redis().eval(_RELEASE, 1, _lease_key(request_id), attempt, ENDED_LEASE_MS)


async def attempt_claim(request_id: str, attempt: int) -> bool:
    """For a dispatcher handing an attempt to a node: if it is still current, take its lease (one
    round trip); False when it was cancelled or dispatched again."""
    keys = [_state_key(request_id), _lease_key(request_id)]
    return bool(await get_async_redis().eval(_CLAIM, 2, *keys, attempt, lease_ms()))


async def lease_held(request_id: str, attempt: int) -> bool:
    current = await get_async_redis().get(_lease_key(request_id))
    return current is not None and int(current) == attempt


_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: state and lease key of each attempt, in pairs; ARGV: the lease's time to live, then the attempts.
_RENEW = """
for i = 1, #KEYS / 2 do
  local attempt = ARGV[i + 1]
  if redis.call('GET', KEYS[2 * i - 1]) == attempt then
    redis.call('SET', KEYS[2 * i], attempt, 'PX', ARGV[1])
  end
end
return 1
"""

_DROP = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) end
end
return 1
"""

"""The server side of a node's jobs: take work from the queue for it, and check what it answers.

One :class:`NodeDispatcher` lives in the web process that holds a node's WebSocket, for as long as
the socket is open. While the node has a free slot, is not draining and serves some queues, it pops
the next job from those queues (:mod:`inference.jobqueue`), tells the waiting view which node got
it, and hands the job to the node. Every ``job.*`` message the node sends is checked against the
jobs handed to *this* connection — a node can answer, end or report usage only for its own jobs,
and only in the shape and bounds of the job — and then relayed to the view's reply channel.
When the connection closes, the views of its unfinished jobs hear ``job.lost`` at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from channels.exceptions import ChannelFull
from django.conf import settings
from redis.exceptions import RedisError

from deployments import reliability
from inference import jobqueue, journal, liveness, replies
from nodeprotocol import (
    CANCEL,
    FINISH_REASONS,
    JOB,
    JOB_DONE,
    JOB_ERROR,
    JOB_EVENTS,
    JOB_VECTORS,
    KIND_EMBED,
    KIND_GENERATE,
    VECTORS_MESSAGE_BYTES,
)
from nodeprotocol.tokens import count_tokens

logger = logging.getLogger(__name__)

POP_TIMEOUT_SECONDS = 1
LEASE_RENEW_SECONDS = 1.0
STRAY_LOG_SECONDS = 60.0
KEYS_FRESH_SECONDS = 0.5
# How long a relay waits, step by step, for room in a web process's reply channels (~30 s in all).
BACKPRESSURE_SECONDS = (0.01, 0.02, 0.05, 0.1, 0.2) + (0.5,) * 58
ERROR_STATUSES = frozenset({400, 404, 408, 413, 422, 429, 500, 502, 503, 504})
ERROR_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MESSAGE_LIMIT = 1000
MAX_DIMENSIONS = 65536


class ProtocolViolation(Exception):
    """A node message that does not fit the job it names; the message is logged and dropped."""


@dataclass
class HandedJob:
    """A job handed to this node: what the node may say about it is checked against this."""

    id: str
    queued: jobqueue.QueuedJob
    choices: int = 0  # generation: the choices it may write to
    inputs: int = 0  # embeddings: the inputs it must send vectors for
    relayed_tokens: int = 0  # completion tokens relayed to the view so far (the platform's count)
    vectors_seen: set[int] = field(default_factory=set)


def _bounded_int(value, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolViolation(f"{what} must be an integer from {low} to {high}")
    return value


MAX_TOOL_CALLS = 64  # tool calls in one choice
MAX_TOKEN_CHARS = 256  # characters of one token in a log-probability entry
MAX_ENTRIES_PER_EVENT = 4096
TOOL_CALL_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _tool_names(spec: dict) -> set[str]:
    """The functions a job lets the node call: none when it has no tools or tool_choice "none"."""
    tools = spec.get("tools") or []
    choice = spec.get("tool_choice")
    if choice == "none":
        return set()
    if isinstance(choice, dict):
        return {choice.get("function", {}).get("name")}
    return {tool.get("function", {}).get("name") for tool in tools if isinstance(tool, dict)}


def _tool_call_pieces(spec: dict, pieces) -> list[dict]:
    """Tool-call pieces, only for a job with tools, only calling its functions."""
    names = _tool_names(spec)
    if not names:
        raise ProtocolViolation("a tool call for a request without tools")
    if not isinstance(pieces, list) or not pieces:
        raise ProtocolViolation("tool-call pieces must be a non-empty list")
    checked = []
    for piece in pieces:
        if not isinstance(piece, dict):
            raise ProtocolViolation("a tool-call piece must be an object")
        out = {"index": _bounded_int(piece.get("index"), 0, MAX_TOOL_CALLS - 1, "tool call index")}
        arguments = piece.get("arguments", "")
        if not isinstance(arguments, str):
            raise ProtocolViolation("tool-call arguments must be a string")
        out["arguments"] = arguments
        if piece.get("id") is not None:
            if not isinstance(piece["id"], str) or not TOOL_CALL_ID_RE.match(piece["id"]):
                raise ProtocolViolation("a tool call's id must be a short word")
            out["id"] = piece["id"]
        if piece.get("name") is not None:
            if piece["name"] not in names:
                raise ProtocolViolation(f"a call of {str(piece['name'])[:64]!r}, which the request does not offer")
            out["name"] = piece["name"]
        checked.append(out)
    return checked


def _logprob(value) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not -1e4 <= value <= 0:
        raise ProtocolViolation("a log probability must be a number from -10000 to 0")
    return float(value)


def _logprobs(spec: dict, entries, text: str) -> list[dict]:
    """Log-probability entries, only for a job that asked, with at most the alternatives it asked for."""
    if not spec.get("logprobs"):
        raise ProtocolViolation("log probabilities for a request that did not ask for them")
    alternatives = spec.get("top_logprobs") or 0
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES_PER_EVENT:
        raise ProtocolViolation("log probabilities must be a bounded list")
    checked = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ProtocolViolation("a log-probability entry must be an object")
        token, top = entry.get("token"), entry.get("top") or []
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise ProtocolViolation("a log-probability entry's token must be a short string")
        if not isinstance(top, list) or len(top) > alternatives:
            raise ProtocolViolation(f"more than the {alternatives} alternatives asked for")
        alternatives_checked = []
        for pair in top:
            if not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str):
                raise ProtocolViolation("an alternative must be [token, logprob]")
            if len(pair[0]) > MAX_TOKEN_CHARS:
                raise ProtocolViolation("an alternative's token must be short")
            alternatives_checked.append([pair[0], _logprob(pair[1])])
        checked.append({"token": token, "logprob": _logprob(entry.get("logprob")), "top": alternatives_checked})
    return checked


class NodeDispatcher:
    """Jobs for one connected node. ``send_to_node`` writes a protocol message to its socket;
    ``channel_layer`` and ``session_channel`` are the consumer's."""

    def __init__(
        self,
        *,
        node_name: str,
        channel_layer,
        session_channel: str,
        send_to_node: Callable[[dict], Awaitable[None]],
        trusted: bool = True,
    ) -> None:
        self.node_name = node_name
        # A community (host's) node never takes the jobs of trusted_only keys (marketplace).
        self.trusted = trusted
        self.layer = channel_layer
        self.session_channel = session_channel
        self.send_to_node = send_to_node
        self.slots = 0
        self.draining = False
        # queue -> id of this node's replica that serves it (only replicas it reports running)
        self.serving: dict[str, int] = {}
        self.jobs: dict[str, HandedJob] = {}
        # Jobs popped and being handed over (each in a task of its own: a hand-over takes several
        # Redis round trips, which must not hold up the next pop); they take slots meanwhile.
        self._handing = 0
        self._stray, self._stray_logged_at = 0, -STRAY_LOG_SECONDS
        self._handoffs: set[asyncio.Task] = set()
        self._capacity = asyncio.Event()
        self.closing = False  # (read by the liveness thread)
        self._puller: asyncio.Task | None = None
        self._redis: aioredis.Redis | None = None
        self._turn = 0  # accounts take turns: their order rotates on every pop
        self._accounts: list[str] = []
        self._keys_for: list[str] = []
        self._keys_at = 0.0
        # Jobs served and failed since the last heartbeat: the node's reliability history.
        self._activity: dict[str, int] = {}
        self._keeper: asyncio.Task | None = None
        # Read by the liveness thread, which judges the node's silence on them.
        self.heard_at, self.heard_wall = time.monotonic(), time.time()
        self.receiving = 0  # node messages being relayed right now
        self.silent = False  # set by the liveness thread
        self._liveness: liveness.Liveness | None = None

    # --- what the consumer tells it ----------------------------------------------------------

    def start(self) -> None:
        self._redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
        self._liveness = liveness.liveness()
        self._liveness.add(self)
        self._puller = asyncio.create_task(self._pull(), name=f"dispatch-{self.node_name}")
        self._keeper = asyncio.create_task(self._keep(), name=f"keep-{self.node_name}")

    def update(self, *, slots: int, draining: bool, serving: dict[str, int]) -> None:
        """The node's state after a heartbeat: its slots, whether it drains, the queues it serves."""
        self.slots, self.draining, self.serving = slots, draining, serving
        self._check_capacity()

    def busy_by_queue(self) -> dict[str, int]:
        """This node's jobs in flight per deployment queue."""
        busy: dict[str, int] = {}
        for job in self.jobs.values():
            busy[job.queued.queue] = busy.get(job.queued.queue, 0) + 1
        return busy

    def _count(self, metric: str) -> None:
        self._activity[metric] = self._activity.get(metric, 0) + 1

    async def _record_activity(self) -> None:
        counts, self._activity = self._activity, {}
        try:
            await reliability.arecord(self.node_name, counts)
        except RedisError as error:
            logger.warning("Could not count the jobs of %s: %s", self.node_name, error)

    def heard(self) -> None:
        """The node said something (a heartbeat, output): it is alive."""
        now = time.monotonic()
        # Back from silence, or heard after a pause its presence may not have outlived: present
        # again at once, not at the liveness thread's next tick.
        back = self.silent or now - self.heard_at > LEASE_RENEW_SECONDS
        self.heard_at, self.heard_wall = now, time.time()
        if back and self._liveness is not None:
            self._liveness.wake()

    def leases(self) -> dict[str, int]:
        """The attempts this node is running (``{request_id: attempt}``), whose leases it keeps.
        (Also read by the liveness thread: ``dict()`` copies the jobs in one step under the GIL.)"""
        return {job.queued.request_id: job.queued.attempt for job in dict(self.jobs).values()}

    async def _keep(self) -> None:
        """Every LEASE_RENEW_SECONDS: stop the jobs whose views' web process died, and record the
        node's reliability history. (Its presence and its jobs' leases are kept by the process's
        liveness thread, which a busy loop cannot hold up: :mod:`inference.liveness`.)"""
        while not self.closing:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            if self._liveness is not None and not self._liveness.is_alive():  # never, but if it did
                logger.error("The liveness thread of %s had stopped; starting another", self.node_name)
                self._liveness = liveness.liveness()  # which takes over its nodes and key
            try:
                if not self.silent:
                    await self._stop_orphans()
                if self._activity:  # jobs served and failed: the node's reliability history
                    await self._record_activity()
            except (RedisError, OSError) as error:
                logger.warning("Could not look after the jobs of %s: %s", self.node_name, error)
            except Exception:
                logger.exception("The keeper of %s failed; it carries on", self.node_name)

    async def _stop_orphans(self) -> None:
        """Stop the jobs whose views' web process died, and settle them with what they relayed."""
        views = {journal.process_of(job.queued.reply_channel) for job in self.jobs.values()}
        for process in await journal.dead(views):
            for job in [j for j in self.jobs.values() if journal.process_of(j.queued.reply_channel) == process]:
                await self.cancel(job.id)
                await journal.settle_orphan(
                    process, job.queued.request_id, completion_tokens=job.relayed_tokens, worker=self.node_name
                )

    async def close(self) -> None:
        """The socket closed: stop taking work, and tell the views of unfinished jobs they are lost."""
        self.closing = True
        if self._liveness is not None:
            self._liveness.discard(self)
        self._capacity.set()
        if self._activity:
            await self._record_activity()
        if self._keeper is not None:
            self._keeper.cancel()
        for job in list(self.jobs.values()):
            try:
                await self._finish(job, {"type": replies.LOST, "node": self.node_name})
            except Exception:  # Redis down: the job's lease lapses and its view finds out that way
                logger.warning("Could not tell the view of %s that its node left", job.queued.request_id)

    async def stop(self) -> None:
        """After close(): wait for a pop in progress, so a job it takes is put back rather than lost."""
        if self._puller is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._puller), POP_TIMEOUT_SECONDS + 1)
            self._puller.cancel()
        if self._redis is not None:
            await self._redis.aclose()

    async def cancel(self, job_id: str) -> None:
        """The view gave up on a job (client gone, or the job moved elsewhere): stop it on the node."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        self._check_capacity()
        with contextlib.suppress(RedisError):
            await replies.lease_release(job.queued.request_id, job.queued.attempt)
        await self.send_to_node({"type": CANCEL, "job": job_id})

    # --- taking work --------------------------------------------------------------------------

    def _check_capacity(self) -> None:
        if len(self.jobs) + self._handing < self.slots and not self.draining and self.serving:
            self._capacity.set()
        else:
            self._capacity.clear()

    async def _pull(self) -> None:
        while not self.closing:
            await self._capacity.wait()
            if self.closing:
                return
            queues = sorted(self.serving)
            if not queues or len(self.jobs) + self._handing >= self.slots or self.draining:
                self._capacity.clear()
                continue
            try:
                keys = await self._keys(queues)
                popped = await self._redis.brpop(keys, timeout=POP_TIMEOUT_SECONDS)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as error:
                logger.warning("Job queue unreachable for %s (%s); retrying", self.node_name, error)
                await asyncio.sleep(1)
                continue
            if popped is None:
                continue
            key, raw = popped[0].decode(), popped[1]
            if self.closing or jobqueue.queue_of(key) not in self.serving:
                # The node went away or stopped serving that queue meanwhile: the job goes back
                # to the head of its list, for the next node.
                await self._redis.rpush(key, raw)
                continue
            queued = jobqueue.decode(key, raw)
            if queued is None:  # a wake-up: an account started queueing
                self._keys_at = 0.0
                continue
            self._handing += 1
            self._check_capacity()
            handoff = asyncio.create_task(self._hand_off(queued, self.serving[queued.queue]))
            self._handoffs.add(handoff)
            handoff.add_done_callback(self._handoffs.discard)

    async def _hand_off(self, queued: jobqueue.QueuedJob, replica_id: int) -> None:
        try:
            await self._hand(queued, replica_id)
        except Exception:
            # Redis or the channel layer failed mid-hand-over: the view's wait for a node
            # times out (or its lease lapses) and it answers the client; keep serving.
            logger.exception("Could not hand %s to %s", queued.request_id, self.node_name)
        finally:
            self._handing -= 1
            self._check_capacity()

    async def _keys(self, queues: list[str]) -> list[str]:
        """The lists to pop from, the accounts' order turned by one on every pop. Which accounts
        have jobs is read again every KEYS_FRESH_SECONDS, or at once after a wake-up."""
        self._turn += 1
        if queues != self._keys_for or time.monotonic() - self._keys_at > KEYS_FRESH_SECONDS:
            self._accounts = await jobqueue.active_accounts(self._redis, queues)
            self._keys_for, self._keys_at = queues, time.monotonic()
        accounts = self._accounts if self.trusted else [a for a in self._accounts if not jobqueue.trusted_only(a)]
        return jobqueue.take_keys(accounts, queues, self._turn)

    async def _hand(self, queued: jobqueue.QueuedJob, replica_id: int) -> None:
        if not await replies.attempt_claim(queued.request_id, queued.attempt):
            logger.info("Dropped %s attempt %s: cancelled, or dispatched again", queued.request_id, queued.attempt)
            return
        # (A job whose view's process died meanwhile is stopped at its node's next heartbeat.)
        spec = queued.spec
        job = HandedJob(
            id=secrets.token_urlsafe(12),
            queued=queued,
            choices=int(spec.get("n", 1)) if queued.kind == KIND_GENERATE else 0,
            inputs=len(spec.get("texts", [])) if queued.kind == KIND_EMBED else 0,
        )
        self.jobs[job.id] = job
        self._check_capacity()
        try:
            await self._reply(
                job,
                {"type": replies.DISPATCHED, "node": self.node_name, "session": self.session_channel, "job": job.id},
            )
            await self.send_to_node(
                {"type": JOB, "job": job.id, "kind": queued.kind, "replica": replica_id, "spec": spec}
            )
        except BaseException:
            self.jobs.pop(job.id, None)
            self._check_capacity()
            raise

    # --- what the node says about its jobs ----------------------------------------------------

    async def receive(self, message: dict) -> None:
        """A ``job.*`` message from the node: checked against its job, then relayed to the view."""
        self.heard()
        self.receiving += 1
        try:
            await self._receive(message)
        finally:
            self.receiving -= 1
            self.heard()

    async def _receive(self, message: dict) -> None:
        job = self.jobs.get(message.get("job")) if isinstance(message.get("job"), str) else None
        if job is None:
            # Output of a job cancelled a moment ago is normal (the node stops when the cancel
            # reaches it): logged once a minute at most, since under load it comes in thousands.
            self._stray += 1
            if time.monotonic() - self._stray_logged_at > STRAY_LOG_SECONDS:
                self._stray_logged_at = time.monotonic()
                logger.warning(
                    "Node %s sent %d message(s) for jobs it does not hold (cancelled, or never handed to it); dropped",
                    self.node_name,
                    self._stray,
                )
                self._stray = 0
            return
        try:
            kind = message.get("type")
            if kind == JOB_EVENTS:
                events = self._events(job, message)
                await self._reply(job, {"type": replies.EVENTS, "events": events})
                job.relayed_tokens += sum(count_tokens(event["t"]) for event in events)
            elif kind == JOB_VECTORS:
                await self._reply(job, self._vectors(job, message))
            elif kind == JOB_DONE:
                await self._finish(job, {"type": replies.DONE, "usage": self._usage(job, message)})
                self._count(reliability.SERVED)
            elif kind == JOB_ERROR:
                error = self._error(message)
                # A client's bad request is not the node's failure; a server error is.
                self._count(reliability.FAILED if error["status"] >= 500 else reliability.SERVED)
                await self._finish(job, error)
            else:
                raise ProtocolViolation(f"unknown message type {kind!r}")
        except (RedisError, ChannelFull, OSError) as error:
            # The view cannot be reached (Redis is down): it fails its request on its side; stop the work.
            logger.warning("Could not relay %s's output for %s: %s", self.node_name, job.queued.request_id, error)
            self.jobs.pop(job.id, None)
            self._check_capacity()
            await self.send_to_node({"type": CANCEL, "job": job.id})
        except ProtocolViolation as violation:
            logger.warning("Node %s broke the protocol on job %s: %s", self.node_name, job.id, violation)
            self._count(reliability.FAILED)
            await self._finish(
                job,
                {
                    "type": replies.ERROR,
                    "message": "The GPU node serving this request sent malformed output. Please retry.",
                    "code": "node_protocol_error",
                    "status": 502,
                },
            )
            await self.send_to_node({"type": CANCEL, "job": job.id})

    def _events(self, job: HandedJob, message: dict) -> list[dict]:
        if job.queued.kind != KIND_GENERATE:
            raise ProtocolViolation("text output for an embeddings job")
        events = message.get("events")
        if not isinstance(events, list) or not events:
            raise ProtocolViolation("events must be a non-empty list")
        spec = job.queued.spec
        checked = []
        for event in events:
            if not isinstance(event, dict):
                raise ProtocolViolation("an event must be an object")
            index = _bounded_int(event.get("i"), 0, job.choices - 1, "event choice index")
            text, reason = event.get("t"), event.get("f")
            if not isinstance(text, str):
                raise ProtocolViolation("event text must be a string")
            if reason is not None and reason not in FINISH_REASONS:
                raise ProtocolViolation(f"unknown finish reason {reason!r}")
            if reason == "tool_calls" and not _tool_names(spec):
                raise ProtocolViolation("finish reason 'tool_calls' for a request without tools")
            out = {"i": index, "t": text, "f": reason}
            if "lp" in event:
                out["lp"] = _logprobs(spec, event["lp"], text)
            if "tc" in event:
                out["tc"] = _tool_call_pieces(spec, event["tc"])
            checked.append(out)
        return checked

    def _vectors(self, job: HandedJob, message: dict) -> dict:
        if job.queued.kind != KIND_EMBED:
            raise ProtocolViolation("vectors for a generation job")
        offset = _bounded_int(message.get("offset"), 0, job.inputs - 1, "offset")
        count = _bounded_int(message.get("count"), 1, job.inputs - offset, "count")
        dimensions = _bounded_int(message.get("dimensions"), 1, MAX_DIMENSIONS, "dimensions")
        try:
            data = base64.b64decode(message.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ProtocolViolation("vector data must be base64") from None
        if len(data) != 4 * count * dimensions or len(data) > 2 * VECTORS_MESSAGE_BYTES:
            raise ProtocolViolation("vector data does not match count and dimensions")
        job.vectors_seen.update(range(offset, offset + count))
        return {"type": replies.VECTORS, "offset": offset, "count": count, "dimensions": dimensions, "data": data}

    def _usage(self, job: HandedJob, message: dict) -> dict:
        usage = message.get("usage")
        if not isinstance(usage, dict):
            raise ProtocolViolation("usage must be an object")
        # Bounded by the job: a node cannot bill more than it could have produced. Prompt counts
        # differ by tokenizer (an upstream's chat template, a model's word pieces), hence the room.
        limits = job.queued.limits
        prompt = _bounded_int(usage.get("prompt_tokens"), 0, 4 * limits["prompt_tokens"] + 4096, "prompt_tokens")
        completion = _bounded_int(usage.get("completion_tokens"), 0, limits["completion_tokens"], "completion_tokens")
        if job.queued.kind == KIND_EMBED and len(job.vectors_seen) != job.inputs:
            raise ProtocolViolation("done before every input's vector was sent")
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _error(self, message: dict) -> dict:
        status = message.get("status")
        code = message.get("code")
        text = message.get("message")
        return {
            "type": replies.ERROR,
            "message": text[:MESSAGE_LIMIT] if isinstance(text, str) and text else "The GPU node failed.",
            "code": code if isinstance(code, str) and ERROR_CODE_RE.match(code) else "engine_error",
            "status": status if status in ERROR_STATUSES else 502,
        }

    async def _reply(self, job: HandedJob, message: dict) -> None:
        """Relay to the view; a full channel slows this node's output down rather than failing it."""
        message = {**message, "attempt": job.queued.attempt}
        for delay in BACKPRESSURE_SECONDS:
            try:
                await self.layer.send(job.queued.reply_channel, message)
                return
            except ChannelFull:
                await asyncio.sleep(delay)
        await self.layer.send(job.queued.reply_channel, message)

    async def _finish(self, job: HandedJob, message: dict) -> None:
        self.jobs.pop(job.id, None)
        self._check_capacity()
        await self._reply(job, message)
        await replies.lease_release(job.queued.request_id, job.queued.attempt)

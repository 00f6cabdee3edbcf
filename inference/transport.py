"""Queue transport and liveness: a request's way to a GPU node and the replies on the way back.

:class:`QueuedCall` opens a reply channel on the Channels layer, puts the job on its deployment's
queue (:mod:`inference.jobqueue`) and reads the replies of the current attempt
(:mod:`inference.replies`). It notices when the node running the attempt is gone — its session
says ``job.lost``, or the attempt's lease lapses because nobody renews it — and raises
:class:`WorkerLost`; what to do then is the caller's business (:mod:`inference.calls`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from accounts.models import ApiKey
from deployments import reliability
from deployments.models import Deployment
from gpucloud.openai_errors import ApiError, service_unavailable
from inference import jobqueue, journal, replies
from inference.metering import UsageMeter
from observability import metrics

logger = logging.getLogger(__name__)

# Kombu's Redis priorities: 0 is served first. Key tiers map onto them; a request dispatched again
# after its node died goes first, since it has waited already.
PRIORITY_BY_TIER = {ApiKey.Priority.HIGH: 0, ApiKey.Priority.STANDARD: 3, ApiKey.Priority.LOW: 6}
RETRY_PRIORITY = 0
# How long a view waits for output before checking its attempt's lease (a Redis read): often
# enough to notice a lost node within a second of its lease lapsing, rarely enough that thousands
# of slow streams do not read Redis between every two tokens.
LIVENESS_CHECK_SECONDS = 1.0
# What the job queue and the Channels layer raise while Redis is unreachable.
BROKER_ERRORS = (RedisError, OperationalError, ChannelFull, OSError)
BROKEN = "transport.broken"  # put in the inbox by the reader when the reply channel fails


def broker_unavailable() -> ApiError:
    return ApiError(
        "The platform lost its connection to its job queue while serving this request. Please retry.",
        status=503,
        type="server_error",
        code="platform_unavailable",
    )


def _release_connection() -> None:
    """Close this thread's database connection unless it is kept (CONN_MAX_AGE) or in a
    transaction (a test's)."""
    if not connection.in_atomic_block:
        close_old_connections()


class WorkerLost(Exception):
    """The node running this request went away (its connection closed, or it fell silent)."""


class QueuedCall:
    """A request on its way through a deployment's queue to a GPU node and back."""

    kind = ""  # nodeprotocol.KIND_GENERATE or KIND_EMBED

    def __init__(self, meter: UsageMeter, deployment: Deployment, request_id: str, *, priority: int) -> None:
        self.meter = meter
        self.deployment = deployment
        self.request_id = request_id
        self.priority = priority
        self.layer = get_channel_layer()
        self.channel = ""
        self.attempt = 0
        # Of the current attempt, once a node has it: the dispatcher session that can cancel it.
        self.session = ""
        self.job_id = ""
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.reader: asyncio.Task | None = None

    def spec(self) -> dict:
        """The job, as plain data for the node."""
        raise NotImplementedError

    def limits(self) -> dict:
        """The most the node may bill for it: ``{"prompt_tokens", "completion_tokens"}``."""
        raise NotImplementedError

    async def submit(self) -> None:
        """Enqueue the job and wait until a node has it; 503 if none takes it in time."""
        # The request's database connection (its own thread's) is idle from here until usage is
        # recorded, maybe minutes later: give it back meanwhile. Thousands of streams holding one
        # each cost hundreds of MB (a SQLite connection's caches) and as many descriptors.
        await sync_to_async(_release_connection)()
        # The default prefix: channels_redis receives every specific channel of this process from
        # one Redis key per prefix, under one lock, so a second prefix would starve behind consumers'.
        self.channel = await self.layer.new_channel()
        # One reader drains the reply channel into a queue, so waiting with timeouts is cancel-safe.
        self.reader = asyncio.create_task(self._read())
        try:
            await journal.open_entry(self.request_id, self._journal_entry())
        except BROKER_ERRORS as error:
            await self.close()
            logger.warning("Could not journal %s: %s", self.request_id, error)
            raise broker_unavailable() from None
        await self._dispatch(self.priority)
        await self._next(settings.INFERENCE_QUEUE_TIMEOUT, waiting_for_worker=True)

    def _journal_entry(self) -> dict:
        """What settling this request needs if this process dies before it does."""
        meter, api_key = self.meter, self.meter.request.api_key
        reservation = getattr(meter, "reservation", None)
        return {
            "user": api_key.user_id,
            "api_key": api_key.pk,
            "endpoint": meter.endpoint,
            "model": meter.model_name,
            "deployment": meter.deployment,
            "stream": meter.stream,
            "prompt_tokens": meter.prompt_tokens,
            "reservation": reservation.as_dict() if reservation is not None else None,
        }

    async def _read(self) -> None:
        try:
            while True:
                await self.inbox.put(await self.layer.receive(self.channel))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("Reply channel of %s failed: %s", self.request_id, error)
            await self.inbox.put({"type": BROKEN})

    async def _dispatch(self, priority: int) -> None:
        self.attempt += 1
        self.session = self.job_id = ""
        self.meter.worker = ""
        try:
            await replies.attempt_begin(self.request_id, self.attempt)
            await sync_to_async(jobqueue.enqueue, thread_sensitive=False)(
                queue=self.deployment.queue_name,
                account=self.meter.request.api_key.user_id,
                priority=priority,
                request_id=self.request_id,
                attempt=self.attempt,
                kind=self.kind,
                spec=self.spec(),
                reply_channel=self.channel,
                limits=self.limits(),
                trusted_only=self.meter.trusted_only,
            )
            metrics.enqueued(self)
        except BROKER_ERRORS as error:
            logger.warning("Could not enqueue %s: %s", self.request_id, error)
            await self.close()
            raise broker_unavailable() from None

    async def _next(self, wait: float, waiting_for_worker: bool = False) -> dict:
        """The current attempt's next message; raises WorkerLost if its node goes away meanwhile."""
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self.cancel()
                if waiting_for_worker:
                    raise service_unavailable(
                        f"No GPU node picked up the request within {wait:.0f}s: the deployment "
                        f"'{self.deployment.name}' has no free node. Retry later.",
                        code="no_worker_available",
                    )
                raise ApiError(
                    f"The GPU node stopped sending output for {wait:.0f}s.",
                    status=504,
                    type="server_error",
                    code="worker_timeout",
                )
            # Liveness is checked only once a node holds the attempt: thousands of requests waiting
            # in the queue do not wake every half second for nothing.
            timeout = min(remaining, LIVENESS_CHECK_SECONDS) if self.job_id else remaining
            try:
                message = await asyncio.wait_for(self.inbox.get(), timeout)
            except TimeoutError:
                if self.job_id and not await self._lease_held():
                    raise WorkerLost(self.meter.worker) from None
                continue
            kind = message["type"]
            if kind == BROKEN:
                await self.cancel()
                raise broker_unavailable()
            if message.get("attempt") != self.attempt:
                continue  # from a node this request was taken away from
            if kind == replies.ERROR:
                await self.close()
                status = message.get("status", 502)
                error_type = "invalid_request_error" if status < 500 else "server_error"
                raise ApiError(message["message"], status=status, type=error_type, code=message["code"])
            if kind == replies.LOST:
                raise WorkerLost(message.get("node") or self.meter.worker)
            if kind == replies.DISPATCHED:
                self.meter.worker, self.session, self.job_id = message["node"], message["session"], message["job"]
                metrics.dispatched(self)
                if waiting_for_worker:
                    return message
                continue
            return message

    async def _lease_held(self) -> bool:
        try:
            return await replies.lease_held(self.request_id, self.attempt)
        except BROKER_ERRORS as error:
            logger.warning("Could not check the lease of %s: %s", self.request_id, error)
            await self.cancel()
            raise broker_unavailable() from None

    def _check_attempts(self, lost: WorkerLost, restart_visible: bool = False) -> None:
        if self.attempt >= settings.INFERENCE_MAX_ATTEMPTS or restart_visible:
            raise ApiError(
                f"The GPU node {lost} serving this request went offline. Please retry.",
                status=502,
                type="server_error",
                code="worker_lost",
            )

    async def _stop_on_node(self) -> None:
        """Tell the session holding the current attempt to stop it (a frozen node may wake up)."""
        if self.session and self.job_id:
            try:
                await self.layer.send(self.session, {"type": "job.cancel", "job": self.job_id})
            except Exception:  # its web process may be gone, which stopped the job already
                logger.info("Could not reach the session of %s to cancel it", self.request_id)
        self.session = self.job_id = ""

    async def redispatch(self, lost: WorkerLost, *, restart_visible: bool = False) -> None:
        """Dispatch the request again after its node went away, or raise ApiError if that can't be clean."""
        try:  # the node's reliability history: a job it lost
            await reliability.arecord(str(lost), {reliability.LOST: 1})
        except RedisError as error:
            logger.warning("Could not count the job %s lost: %s", lost, error)
        try:
            self._check_attempts(lost, restart_visible)
        except ApiError:
            await self.cancel()
            raise
        logger.warning("Node %s lost while serving %s; dispatching it again", lost, self.request_id)
        await self._stop_on_node()
        await self._dispatch(RETRY_PRIORITY)

    async def cancel(self) -> None:
        """The request is over for the client: drop it from the queue, stop it on its node."""
        try:
            await replies.request_cancel(self.request_id)
        except BROKER_ERRORS as error:  # the attempt's lease lapses, and its node loses the job
            logger.warning("Could not mark %s cancelled: %s", self.request_id, error)
        await self._stop_on_node()
        await self.close()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            self.reader = None

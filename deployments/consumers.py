"""WebSocket consumers: GPU nodes (/ws/workers/, the node protocol) and the live fleet view (/ws/dashboard/)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from deployments.fleet import (
    Refused,
    UnknownCredential,
    check_protocol,
    clean_heartbeat,
    node_authenticate,
    node_disconnected,
    node_group,
    node_heartbeat,
)
from deployments.models import Trust
from deployments.presence import heartbeats_interrupt
from gpucloud import periodic
from inference.dispatcher import NodeDispatcher
from nodeprotocol import (
    ASSIGN,
    CLOSE_REFUSED,
    CLOSE_UNKNOWN,
    HEARTBEAT,
    LEAVING,
    REFUSED,
    VERSION_HEADER,
    WELCOME,
)
from nodeprotocol import VERSION as PROTOCOL_VERSION

logger = logging.getLogger(__name__)


# The periodic work this process runs, if any (one at a time).
_periodic_task: asyncio.Task | None = None
_periodic_asked_at = -1e9

# "Try again later": a node reconnects after its backoff.
CLOSE_TRY_AGAIN = 1013


def _int_or_none(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


class WorkerConsumer(AsyncJsonWebsocketConsumer):
    """One GPU node's session: the only way a node talks to the platform.

    Authenticated by the node credential (``Authorization: Bearer gpcn_…``) and the node protocol
    version (``nodeprotocol.VERSION_HEADER``). Heartbeats are recorded and answered with ``assign``
    when the replicas the node reports differ from the ones placed on it; its jobs are taken from
    the queues and checked by an :class:`~inference.dispatcher.NodeDispatcher`. Revoking the
    credential closes the socket at once (group ``node_group``).
    """

    node_id: int | None = None
    node_name = ""
    leaving = False
    _beating: asyncio.Task | None = None
    _next_beat: dict | None = None
    dispatcher: NodeDispatcher | None = None

    async def connect(self):
        headers = dict(self.scope.get("headers", []))
        scheme, _, credential = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        await self.accept()
        try:
            check_protocol(_int_or_none(headers.get(VERSION_HEADER.encode(), b"").decode("latin-1")))
            if scheme.lower() != "bearer":
                raise Refused("Send the node credential as 'Authorization: Bearer <credential>'.")
            node = await database_sync_to_async(node_authenticate)(credential.strip())
        except UnknownCredential as refusal:
            await self.refuse(str(refusal), code=CLOSE_UNKNOWN)
            return
        except Refused as refusal:
            await self.refuse(str(refusal))
            return
        try:
            await self.channel_layer.group_add(node_group(node.pk), self.channel_name)
        except RedisError:
            # Without the group, revoking the node could not reach this socket: let it retry.
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        self.node_id, self.node_name = node.pk, node.name
        self.dispatcher = NodeDispatcher(
            node_name=node.name,
            channel_layer=self.channel_layer,
            session_channel=self.channel_name,
            send_to_node=self.send_json,
            trusted=node.trust == Trust.TRUSTED,
        )
        self.dispatcher.start()
        await self.send_json(
            {
                "type": WELCOME,
                "node": node.name,
                "heartbeat_interval": settings.WORKER_HEARTBEAT_INTERVAL,
                "protocol": PROTOCOL_VERSION,
            }
        )

    async def refuse(self, message: str, code: int = CLOSE_REFUSED) -> None:
        await self.send_json({"type": REFUSED, "message": message})
        await self.close(code=code, reason=message[:120])

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # A node's message is untrusted input, bounded by Daphne (1 MB) and checked field by field
        # against its job by the dispatcher; here it only has to be a JSON object.
        try:
            content = json.loads(text_data or bytes_data or b"")
        except (ValueError, RecursionError):  # not JSON, an integer too long, nesting too deep
            content = None
        if not isinstance(content, dict):
            logger.warning("Node %s sent a message that is not a JSON object; dropped", self.node_name or "(new)")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        if self.node_id is None:
            return
        kind = content.get("type")
        if kind == HEARTBEAT:
            # The node is alive: its dispatcher keeps its presence and its jobs' leases from the event
            # loop. The heartbeat's database work runs beside the node's output (one at a time, the
            # latest heartbeat next), never in front of it: a database slow under load must neither
            # stall every stream of the node nor make the node look silent.
            self.dispatcher.heard()
            self._next_beat = content
            if self._beating is None or self._beating.done():
                self._beating = asyncio.create_task(self._record_heartbeats())
        elif isinstance(kind, str) and kind.startswith("job."):
            await self.dispatcher.receive(content)
        elif kind == LEAVING:
            self.dispatcher.heard()
            self.leaving = True

    async def dispatch(self, message):
        """As channels does, without its thread hop to close old database connections before every
        message: every database call here goes through database_sync_to_async, which does that
        itself, and at thousands of node messages a second that hop (through the one thread all
        consumers share) was the bottleneck, stalling every node's output behind any slow query."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def _record_heartbeats(self) -> None:
        while self._next_beat is not None:
            content, self._next_beat = self._next_beat, None
            try:
                await self.heartbeat(content)
            except Exception:
                logger.exception("Could not handle a heartbeat of %s", self.node_name)

    async def heartbeat(self, content: dict) -> None:
        # In flight, in all and per queue: ours, not its claim.
        telemetry = clean_heartbeat(
            {**content, "in_flight": len(self.dispatcher.jobs), "busy": self.dispatcher.busy_by_queue()}
        )
        try:
            assignment, serving = await database_sync_to_async(node_heartbeat)(self.node_id, telemetry)
        except Refused as refusal:
            await self.refuse(str(refusal))
            return
        except DatabaseError as error:
            # The database is briefly unreachable: keep the socket, the next heartbeat tries again,
            # and placement does not take the silence that follows for nodes gone.
            logger.warning("Could not record a heartbeat of %s: %s", self.node_name, error)
            with contextlib.suppress(RedisError):
                await database_sync_to_async(heartbeats_interrupt)()
            return
        self.dispatcher.update(slots=telemetry["slots"], draining=telemetry["draining"], serving=serving)
        if sorted(telemetry["replicas"]) != sorted(str(r["id"]) for r in assignment):
            await self.send_json({"type": ASSIGN, "replicas": assignment})
        await self._periodic()

    async def _periodic(self) -> None:
        """The platform's periodic work (gpucloud.periodic), in one process per interval, beside the
        node's traffic rather than in front of it."""
        global _periodic_task, _periodic_asked_at
        if _periodic_task is not None and not _periodic_task.done():
            return
        # Every node's heartbeat comes here: ask Redis for the turn only twice per interval.
        if time.monotonic() - _periodic_asked_at < settings.PERIODIC_INTERVAL / 2:
            return
        _periodic_asked_at = time.monotonic()
        try:
            if not await periodic.claim_turn():
                return
        except RedisError:
            return
        _periodic_task = asyncio.create_task(database_sync_to_async(periodic.run, thread_sensitive=False)())

    async def job_cancel(self, event):
        """From a view: stop one of this node's jobs."""
        if self.dispatcher is not None:
            await self.dispatcher.cancel(event["job"])

    async def node_revoked(self, event):
        """From node_credential_revoke: this node may serve no more."""
        await self.refuse("This node's credential has been revoked by an operator.")

    async def disconnect(self, code):
        if self.node_id is None:
            return
        with contextlib.suppress(RedisError):
            await self.channel_layer.group_discard(node_group(self.node_id), self.channel_name)
        # Its jobs go elsewhere at once, then the node is offline, then the last pop is settled.
        await self.dispatcher.close()
        self._next_beat = None
        if self._beating is not None:  # a heartbeat being recorded must not land after the disconnection
            with contextlib.suppress(Exception):
                await self._beating
        await database_sync_to_async(node_disconnected)(self.node_id, left=self.leaving)
        await self.dispatcher.stop()


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """Pushes a fleet snapshot to staff browsers every second."""

    interval = 1.0

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4003)
            return
        await self.accept()
        self.pusher = asyncio.create_task(self.push())

    async def push(self):
        from deployments.selectors import fleet_snapshot

        while True:
            try:
                await self.send_json({"type": "fleet", **await database_sync_to_async(fleet_snapshot)()})
            except Exception:
                logger.exception("Could not build the fleet snapshot")
            await asyncio.sleep(self.interval)

    async def disconnect(self, code):
        pusher = getattr(self, "pusher", None)
        if pusher is not None:
            pusher.cancel()

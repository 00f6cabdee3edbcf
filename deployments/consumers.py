"""WebSocket consumers: GPU workers' heartbeats (/ws/workers/) and the live fleet view (/ws/dashboard/)."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from deployments.fleet import Refused, node_authenticate, node_disconnected, node_heartbeat

logger = logging.getLogger(__name__)

# Close codes the worker understands: do not reconnect, the credential is no good.
CLOSE_REFUSED = 4003


class WorkerConsumer(AsyncJsonWebsocketConsumer):
    """One GPU node's session: it sends heartbeats, and is told which queues to consume.

    Authenticated by the node credential in ``Authorization: Bearer gpcn_…``. Every heartbeat
    answers with an ``assign`` message when the replicas the node reports differ from the ones
    placed on it.
    """

    node_id: int | None = None
    node_name = ""
    leaving = False

    async def connect(self):
        headers = dict(self.scope.get("headers", []))
        scheme, _, credential = headers.get(b"authorization", b"").decode().partition(" ")
        await self.accept()
        try:
            if scheme.lower() != "bearer":
                raise Refused("Send the node credential as 'Authorization: Bearer <credential>'.")
            node = await database_sync_to_async(node_authenticate)(credential.strip())
        except Refused as refusal:
            await self.refuse(str(refusal))
            return
        self.node_id, self.node_name = node.pk, node.name
        await self.send_json(
            {"type": "welcome", "node": node.name, "heartbeat_interval": settings.WORKER_HEARTBEAT_INTERVAL}
        )

    async def refuse(self, message: str) -> None:
        await self.send_json({"type": "refused", "message": message})
        await self.close(code=CLOSE_REFUSED)

    async def receive_json(self, content, **kwargs):
        if self.node_id is None:
            return
        kind = content.get("type")
        if kind == "heartbeat":
            try:
                assignment = await database_sync_to_async(node_heartbeat)(self.node_id, content)
            except Refused as refusal:
                await self.refuse(str(refusal))
                return
            if sorted(int(pk) for pk in content.get("replicas") or {}) != [r["id"] for r in assignment]:
                await self.send_json({"type": "assign", "replicas": assignment})
        elif kind == "leaving":
            self.leaving = True

    async def disconnect(self, code):
        if self.node_id is not None:
            await database_sync_to_async(node_disconnected)(self.node_id, left=self.leaving)


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

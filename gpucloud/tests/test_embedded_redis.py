"""gpucloud.embedded_redis: start, reuse and stop a Redis server on a Unix socket."""

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import redis

from gpucloud import embedded_redis


@pytest.fixture
def directory():
    # Unix socket paths are limited to 107 characters: pytest's tmp_path can be too long.
    path = Path(tempfile.mkdtemp(prefix="gpcr-", dir="/tmp"))
    yield path
    embedded_redis.stop(path)
    _kill_leftover_server(path)
    shutil.rmtree(path, ignore_errors=True)


def _kill_leftover_server(path: Path) -> None:
    """Never leave a daemonised server behind, even when stop() is what broke."""
    try:
        pid = int((path / "redis.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(path).encode() in cmdline:
        os.kill(pid, signal.SIGTERM)


def server_pid(url: str) -> int:
    return redis.Redis.from_url(url).info("server")["process_id"]


def test_it_works(directory):
    url = embedded_redis.ensure_running(directory)

    assert url == f"unix://{directory / 'redis.sock'}"
    client = redis.Redis(unix_socket_path=str(directory / "redis.sock"))
    assert client.ping() is True
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"


def test_it_reuses_a_running_server(directory):
    url = embedded_redis.ensure_running(directory)
    pid = server_pid(url)
    redis.Redis.from_url(url).set("kept", "yes")

    assert embedded_redis.ensure_running(directory) == url

    assert server_pid(url) == pid
    assert redis.Redis.from_url(url).get("kept") == b"yes"


def test_it_stops_the_server(directory):
    url = embedded_redis.ensure_running(directory)

    embedded_redis.stop(directory)

    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_it_stops_nothing_when_nothing_runs(directory):
    embedded_redis.stop(directory)  # no server, no error

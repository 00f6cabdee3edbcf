"""``manage.py runplatform``: the whole platform on embedded defaults, ready when it says so, and
healing a dead Daphne or embedded Redis by itself."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from conftest import BASE_DIR, _free_port, wait_for
from gpucloud import embedded_redis

pytestmark = pytest.mark.live


@pytest.fixture
def platform(tmp_path):
    """runplatform in a var dir of its own (SQLite, embedded Redis), its output lines in a queue."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    env.update({"GPUCLOUD_VAR_DIR": str(tmp_path), "PORT": str(port), "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runplatform", "--without-embeddings"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        yield process, f"http://127.0.0.1:{port}", env, lines, tmp_path
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        embedded_redis.stop(tmp_path / "redis")


def _until_line(lines: queue.Queue, text: str, timeout: float = 120) -> str:
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line with {text!r} within {timeout}s; got: {''.join(seen[-20:])}") from None
        seen.append(line)
        if text in line:
            return line


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_it_is_ready_when_it_says_so_and_heals_its_own_processes(platform):
    process, url, env, lines, var = platform
    _until_line(lines, "is ready at")

    # The README's first call works at once: no 503 model_not_ready after "ready".
    create = [sys.executable, "manage.py", "createapikey", "admin", "--name", "t", "--scopes", "inference"]
    key = subprocess.run(create, cwd=BASE_DIR, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
    body = {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}
    headers = {"Authorization": f"Bearer {key}"}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text

    # Daphne dies: it is started again, and the node reconnects.
    port = url.rsplit(":", 1)[1]
    subprocess.run(["pkill", "-KILL", "-f", f"daphne -b 127.0.0.1 -p {port} "], check=True)
    _until_line(lines, "starting it again", timeout=30)
    wait_for(lambda: _healthy(url), timeout=30, message="/health after Daphne came back")

    # The embedded Redis dies: it is started again, and the platform serves.
    embedded_redis.stop(var / "redis")
    _until_line(lines, "embedded Redis is not answering", timeout=30)
    wait_for(lambda: _healthy(url), timeout=30, message="/health after Redis came back")

    def served() -> bool:
        return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30).status_code == 200

    wait_for(served, timeout=30, interval=0.5, message="a request to succeed again")
    assert process.poll() is None

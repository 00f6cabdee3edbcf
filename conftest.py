"""Shared fixtures: users and keys, the demo catalog, and a live platform (Daphne + a GPU worker)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def _clean_embedded_redis():
    """The embedded test Redis belongs to the tests: start each session from an empty one."""
    if not os.environ.get("REDIS_URL"):
        from gpucloud.redis_client import get_redis

        get_redis().flushdb()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "correct horse battery")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("mallory", "mallory@example.com", "another long password")


@pytest.fixture
def make_key():
    """make_key(user, **kwargs) -> (ApiKey, plaintext key)."""
    from accounts.models import ApiKey
    from accounts.services import api_key_create

    def make(owner, name="test key", scopes=(ApiKey.Scope.INFERENCE, ApiKey.Scope.MANAGEMENT), **kwargs):
        return api_key_create(user=owner, name=name, scopes=scopes, **kwargs)

    return make


@pytest.fixture
def catalog():
    from deployments.services import demo_catalog_ensure

    return demo_catalog_ensure()


# --- A live platform ------------------------------------------------------------------------


@dataclass
class LivePlatform:
    url: str
    env: dict
    daphne: subprocess.Popen
    workers: list[subprocess.Popen]

    def start_worker(self, name: str) -> subprocess.Popen:
        worker = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "gpuworker", f"--name={name}", "--loglevel=WARNING"],
            env=self.env,
            cwd=BASE_DIR,
        )
        self.workers.append(worker)
        return worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _wait_healthy(url: str, processes: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode} during start-up")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"The live platform at {url} did not become healthy in {timeout}s")


@pytest.fixture(scope="session")
def live_platform(django_db_setup, django_db_blocker):
    """Daphne and one GPU worker in their own processes, on the test database and Redis."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "WORKER_PRESENCE_INTERVAL": "0.5",
        "INFERENCE_QUEUE_TIMEOUT": "15",
        "LOG_LEVEL": "WARNING",
    }
    daphne = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "gpucloud.asgi:application"],
        env=env,
        cwd=BASE_DIR,
    )
    platform = LivePlatform(url=f"http://127.0.0.1:{port}", env=env, daphne=daphne, workers=[])
    platform.start_worker("gpuworker-test-1@localhost")
    try:
        _wait_healthy(platform.url, [daphne, *platform.workers])
        yield platform
    finally:
        for process in [daphne, *platform.workers]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [daphne, *platform.workers]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def live(live_platform, transactional_db, catalog):
    """The live platform, with the demo catalog committed where its processes can see it."""
    return live_platform

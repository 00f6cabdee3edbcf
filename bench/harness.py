"""A private GPU Cloud platform for the benchmarks: Daphne and GPU nodes that join with a join token.

The benchmarks never touch the development data: they force ``GPUCLOUD_VAR_DIR=var/bench``, so the
SQLite database is ``var/bench/db.sqlite3`` (recreated on every run), the embedded Redis lives in
``var/bench/redis/`` and the processes' logs go to ``var/bench/logs/`` (unless ``DATABASE_URL`` /
``REDIS_URL`` are set, which are then used as they are).

GPU nodes start as on a machine outside the server: ``python -m gpunode --server URL``, the join
token in ``GPUCLOUD_JOIN_TOKEN``, a fresh ``--state-dir`` each (under a temporary directory removed
on exit), and an environment without the server's settings (no ``DATABASE_URL``, ``REDIS_URL``,
``SECRET_KEY``…): they speak only the node protocol over their WebSocket.

    with embedded_redis_running():          # starts the embedded Redis if REDIS_URL is unset
        with Platform(workers=2) as platform:  # Daphne first, then nodes (python -m gpunode)
            ...                                 # platform.url, platform.key, platform.start_worker()

:func:`embedded_redis_running` stops the Redis server only if it started it, and :class:`Platform`
stops only the processes it started (by their Popen handles), so both are safe next to other
people's test runs and platforms on this machine.

Run one benchmark at a time: each run recreates the SQLite database in ``var/bench/``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from gpucloud.node_environment import node_environment

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var" / "bench"
LOG_DIR = VAR_DIR / "logs"
MODELS = ("llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "qwen2.5-72b-instruct")


def setup_django() -> None:
    """Configure Django for the benchmark process itself, on the benchmarks' own var dir.

    With DATABASE_URL unset, every run starts from a fresh SQLite database in ``var/bench/``: the
    nodes, keys and usage records of earlier runs would only pile up, and a database migrated by an
    older checkout may not match the current migrations.
    """
    os.environ["GPUCLOUD_VAR_DIR"] = str(VAR_DIR)
    if not os.environ.get("DATABASE_URL"):
        for suffix in ("", "-wal", "-shm", "-journal"):
            (VAR_DIR / f"db.sqlite3{suffix}").unlink(missing_ok=True)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpucloud.settings")
    import django

    django.setup()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that the context managers still stop what they started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _redis_responds(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@contextmanager
def embedded_redis_running() -> Iterator[str]:
    """Make sure the platform's Redis is up; yields its URL.

    With REDIS_URL unset, starts the embedded Redis in ``var/bench/redis/`` and empties it (a
    previous run's append-only file may hold queued tasks), and stops it on exit. If one is already
    running there (another benchmark run), it is used as it is and left running.
    """
    from django.conf import settings

    from gpucloud import embedded_redis

    if not settings.USE_EMBEDDED_REDIS or _redis_responds(settings.REDIS_URL):
        yield settings.REDIS_URL
        return
    embedded_redis.ensure_running(settings.EMBEDDED_REDIS_DIR)
    try:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()
        yield settings.REDIS_URL
    finally:
        embedded_redis.stop(settings.EMBEDDED_REDIS_DIR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(label: str) -> tuple[str, str]:
    """Migrate, seed the demo catalog; return a fresh API key (inference + management, a limit the
    benchmark can't hit) and a join token created by the same user, so that the key sees its nodes."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts.models import ApiKey
    from accounts.services import api_key_create
    from deployments.fleet import join_token_create
    from deployments.services import demo_catalog_ensure

    call_command("migrate", interactive=False, verbosity=0)
    demo_catalog_ensure()
    # Staff: the key's limit may go past API_KEY_MAX_RPM (the benchmark must never hit it).
    user, _ = get_user_model().objects.update_or_create(username="bench", defaults={"is_staff": True})
    scopes = (ApiKey.Scope.INFERENCE, ApiKey.Scope.MANAGEMENT)
    _, key = api_key_create(user=user, name=label, scopes=scopes, rpm=ApiKey.RPM_MAX)
    _, token = join_token_create(name=label, created_by=user)
    return key, token


def queue_names(models: Iterable[str]) -> list[str]:
    """The queues of the deployments of ``models`` (placed and served once workers join)."""
    from deployments.models import Deployment

    return sorted(Deployment.objects.get(model__model_id=model_id).queue_name for model_id in models)


@dataclass
class Worker:
    """A GPU node process (``python -m gpunode``); ``node`` is its fleet name (the name given plus ``-<id>``)."""

    name: str
    process: subprocess.Popen
    log: Path
    node: str = ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class PlatformError(RuntimeError):
    pass


class Platform:
    """Daphne on a free port of 127.0.0.1, then ``workers`` GPU nodes joined with a join token.

    ``instant`` sets SIMULATED_ENGINE_INSTANT in the nodes' environment (the node runs the engine
    and reads it from its own environment). ``env`` is added to every process's environment,
    ``node_env`` to the nodes' only. Entering waits for /health 200 and for every node to be online
    and serving the queues of ``models``; leaving sends SIGTERM to every child still running (nodes
    first), waits, then kills what is left, and removes the nodes' state directories.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        slots: int = 8,
        instant: bool = True,
        models: Iterable[str] = MODELS,
        label: str = "bench",
        env: dict[str, str] | None = None,
        node_env: dict[str, str] | None = None,
        ready_timeout: float = 90,
    ) -> None:
        self.initial_workers = workers
        self.slots = slots
        self.instant = instant
        self.models = tuple(models)
        self.label = f"{label}-{secrets.token_hex(2)}"
        self.extra_env = env or {}
        self.extra_node_env = node_env or {}
        self.state_root: Path | None = None
        self.ready_timeout = ready_timeout
        self.url = ""
        self.key = ""
        self.join_token = ""
        self.queues: list[str] = []
        self.daphne: subprocess.Popen | None = None
        self.daphne_log = LOG_DIR / f"{self.label}-daphne.log"
        self.workers: list[Worker] = []
        self._logs: list[IO] = []
        self._client: httpx.Client | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Platform:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        from django.conf import settings

        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.key, self.join_token = prepare(self.label)
        self.queues = queue_names(self.models)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "GPUCLOUD_VAR_DIR": str(VAR_DIR),
            "REDIS_URL": settings.REDIS_URL,
            "LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        self.state_root = Path(tempfile.mkdtemp(prefix=f"{self.label}-nodes-"))
        self._client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10, trust_env=False
        )
        from gpucloud.daphne import command as daphne_command

        self.daphne = self._spawn(daphne_command("127.0.0.1", port, "-v", "0"), self.daphne_log)
        self._wait(self._daphne_answers, 30, "Daphne to answer /health")
        for _ in range(self.initial_workers):
            self.start_worker()
        self.wait_ready(self.workers)

    def close(self) -> None:
        for group in ([w.process for w in self.workers], [self.daphne] if self.daphne else []):
            for process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            for process in group:
                try:
                    process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        if self._client is not None:
            self._client.close()
            self._client = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self.state_root is not None:
            shutil.rmtree(self.state_root, ignore_errors=True)
            self.state_root = None

    def _spawn(self, command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(log_path, "ab")  # noqa: SIM115 -- closed in close()
        self._logs.append(log)
        # A session of their own: a Ctrl-C reaches the benchmark, which stops them in order.
        return subprocess.Popen(
            command,
            env=self.env if env is None else env,
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    # --- workers --------------------------------------------------------------------------

    def node_environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """A node's environment: this process's, less the server's settings, plus the join token."""
        return node_environment(
            LOG_LEVEL="WARNING",
            SIMULATED_ENGINE_INSTANT="true" if self.instant else "false",
            GPUCLOUD_JOIN_TOKEN=self.join_token,
            **self.extra_node_env,
            **(env or {}),
        )

    def start_worker(
        self, name: str | None = None, slots: int | None = None, *args: str, env: dict[str, str] | None = None
    ) -> Worker:
        """Start one more node (not waited for: see :meth:`wait_ready`) with a fresh state directory;
        ``args`` go to ``python -m gpunode``, ``env`` to its environment."""
        assert self.state_root is not None, "the platform is not started"
        name = name or f"{self.label}-w{len(self.workers)}"
        log_path = LOG_DIR / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "gpunode",
            f"--server={self.url}",
            f"--name={name}",
            f"--slots={slots or self.slots}",
            f"--state-dir={self.state_root / name}",
            "--loglevel=WARNING",
            *args,
        ]
        process = self._spawn(command, log_path, env=self.node_environment(env))
        worker = Worker(name=name, process=process, log=log_path)
        self.workers.append(worker)
        return worker

    def stop_worker(self, worker: Worker, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if worker.alive:
            worker.process.send_signal(sig)
        try:
            worker.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(timeout=10)

    def nodes(self) -> dict[str, dict]:
        """Our nodes in ``GET /api/workers``, by node name."""
        response = self.client.get("/api/workers")
        response.raise_for_status()
        return {node["name"]: node for node in response.json()["data"]}

    def node_of(self, worker: Worker, nodes: dict[str, dict]) -> dict | None:
        if worker.node:
            return nodes.get(worker.node)
        pattern = re.compile(rf"^{re.escape(worker.name)}-\d+$")
        for name, node in nodes.items():
            if pattern.match(name):
                worker.node = name
                return node
        return None

    def health(self) -> tuple[int, dict]:
        response = self.client.get("/health")
        return response.status_code, response.json()

    def scale_to_workers(self) -> None:
        """One replica of each benchmark model per live worker, spread: every worker serves them."""
        from deployments.models import Deployment
        from deployments.services import deployment_update

        count = max(1, sum(worker.alive for worker in self.workers))
        for deployment in Deployment.objects.filter(model__model_id__in=self.models):
            deployment_update(deployment=deployment, replicas=count, placement=Deployment.Placement.SPREAD)

    def wait_ready(self, workers: Iterable[Worker], timeout: float | None = None) -> None:
        """Wait for /health 200, and for each worker to be online, consuming the queues, listed by /health."""
        workers = list(workers)
        self.scale_to_workers()

        def ready() -> bool:
            for worker in workers:
                if not worker.alive:
                    raise PlatformError(f"Worker {worker.name} exited ({worker.process.returncode}); see {worker.log}")
            nodes = self.nodes()
            status, health = self.health()
            listed = set(health["checks"]["workers"].get("names", []))
            for worker in workers:
                node = self.node_of(worker, nodes)
                if node is None or node["status"] != "online" or worker.node not in listed:
                    return False
                if not set(self.queues) <= set(node["queues"]):
                    return False
            return status == 200

        self._wait(ready, timeout or self.ready_timeout, f"workers {[w.name for w in workers]} to be ready")

    # --- helpers --------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        assert self._client is not None, "the platform is not started"
        return self._client

    def _daphne_answers(self) -> bool:
        if self.daphne is not None and self.daphne.poll() is not None:
            raise PlatformError(f"Daphne exited ({self.daphne.returncode}); see {self.daphne_log}")
        try:
            return self.client.get("/health").status_code in (200, 503)
        except httpx.TransportError:
            return False

    def _wait(self, condition, timeout: float, what: str, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except httpx.HTTPError as error:  # not up yet, or a passing failure: try again
                last_error = f" (last error: {error!r})"
            time.sleep(interval)
        raise PlatformError(f"Timed out after {timeout:.0f}s waiting for {what}{last_error}; logs in {LOG_DIR}")

    def warm_up(self, model: str = MODELS[0], attempts: int = 20) -> None:
        """Send small chat requests until one succeeds (connections, caches, the node's first job)."""
        body = {"model": model, "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4}
        last = ""
        for _ in range(attempts):
            try:
                response = self.client.post("/v1/chat/completions", json=body, timeout=60)
            except httpx.HTTPError as error:
                last = repr(error)
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            time.sleep(0.2)
        raise PlatformError(f"No warm-up request succeeded in {attempts} attempts (last: {last})")

    def daphne_log_text(self) -> str:
        return self.daphne_log.read_text(errors="replace") if self.daphne_log.exists() else ""

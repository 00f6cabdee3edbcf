"""Shared fixtures: users and keys, the demo catalog, and a live platform (Daphne + a GPU worker)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test.utils import override_settings

from gpucloud.node_environment import node_environment

BASE_DIR = Path(__file__).resolve().parent


def pytest_configure(config):
    """Remove a previous run's SQLite test database with its WAL files: Django deletes only the
    main file, and a stale write-ahead log would bring old rows back into the new database."""
    test_name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" and test_name:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{test_name}{suffix}").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker):
    """Always create the test database: pytest-django creates it only when some collected test
    asks for ``db``, and a session of live tests alone would otherwise run on the real one."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=request.config.option.verbose, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=request.config.option.verbose)


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 at 1,000 iterations instead of its 1,000,000 (~0.4 s a password on this
    machine), for the users tests create and log in by the hundred. The algorithm's name is the
    same and each hash carries its iteration count, so the live servers, on Django's own hashers,
    verify these passwords too."""

    iterations = 1000


@pytest.fixture(scope="session", autouse=True)
def _quick_password_hashing():
    with override_settings(PASSWORD_HASHERS=["conftest.QuickPBKDF2PasswordHasher"]):
        yield


@pytest.fixture(scope="session", autouse=True)
def _redis():
    """Start the embedded test Redis (when REDIS_URL is unset), empty, before any test uses it."""
    if settings.USE_EMBEDDED_REDIS:
        from gpucloud import embedded_redis
        from gpucloud.redis_client import get_redis

        embedded_redis.ensure_running(settings.EMBEDDED_REDIS_DIR)
        get_redis().flushdb()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "correct horse battery")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("mallory", "mallory@example.com", "another long password")


@pytest.fixture
def staff(django_user_model):
    """An operator."""
    return django_user_model.objects.create_user("oscar", "oscar@example.com", "operator password", is_staff=True)


@pytest.fixture
def make_key():
    """make_key(user, **kwargs) -> (ApiKey, plaintext key)."""
    from accounts.models import ApiKey
    from accounts.services import api_key_create

    def make(owner, name="test key", scopes=(ApiKey.Scope.INFERENCE, ApiKey.Scope.MANAGEMENT), **kwargs):
        return api_key_create(user=owner, name=name, scopes=scopes, **kwargs)

    return make


@pytest.fixture
def catalog(db):
    """The demo catalog, served: its replicas placed on a node row and reported loaded.

    No worker process runs: views can route to these deployments, but a request that reaches the
    queue waits for nobody. Tests that need real workers use the ``live`` fixture.
    """
    from django.utils import timezone

    from deployments import placement
    from deployments.models import Replica, WorkerNode
    from deployments.services import demo_catalog_ensure

    WorkerNode.objects.create(
        name="unit-node-1",
        credential_prefix="000000000000",
        hashed_credential="-",
        status=WorkerNode.Status.ONLINE,
        last_heartbeat_at=timezone.now(),
        gpus=[{"index": 0, "name": "A100-80GB", "memory_total_mb": 81920}],
    )
    deployments = demo_catalog_ensure()
    Replica.objects.update(state=Replica.State.RUNNING)
    placement.reconcile()
    return deployments


# --- A live platform ------------------------------------------------------------------------


@dataclass
class LivePlatform:
    """Daphne and GPU workers in their own processes, sharing the test database and Redis.

    Its data (the catalog, a join token, ``user``) is committed, so that those processes see it:
    tests that use it take the ``live`` fixture rather than ``db``.
    """

    url: str
    env: dict
    join_token: str
    user: object
    daphne: subprocess.Popen
    workers: list[subprocess.Popen]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_worker(
        self, name: str = "worker", *args: str, state_dir: Path | None = None, env: dict | None = None
    ) -> subprocess.Popen:
        """Start a GPU node (``python -m gpunode``) that joins with the session's join token.

        It gets the environment of a machine outside the server: no database, Redis or secret key.
        A fresh state directory unless ``state_dir`` is given, so it registers as a new node.
        """
        state_dir = state_dir or Path(tempfile.mkdtemp(prefix=f"gpunode-{name}-"))
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpunode",
                f"--server={self.url}",
                f"--name={name}",
                f"--state-dir={state_dir}",
                "--loglevel=WARNING",
                *args,
            ],
            env={**node_environment(), "GPUCLOUD_JOIN_TOKEN": self.join_token, **(env or {})},
            cwd=BASE_DIR,
        )
        self.workers.append(worker)
        self.processes[name] = worker
        return worker

    def node(self, worker_name: str):
        """The newest WorkerNode registered by a worker started as ``worker_name``."""
        from deployments.models import WorkerNode

        return WorkerNode.objects.filter(name__startswith=f"{worker_name}-").order_by("-pk").first()

    def wait_serving(self, worker_name: str, timeout: float = 30):
        """Wait until the worker has joined, loaded the replicas placed on it, and consumes their queues."""
        from deployments.models import Replica

        def serving():
            process = self.processes.get(worker_name)
            if process is not None and process.poll() is not None:
                raise AssertionError(f"worker {worker_name} exited with {process.returncode}")
            node = self.node(worker_name)
            if node is None:
                return None
            replicas = Replica.objects.filter(node=node).select_related("deployment")
            queues = sorted({r.deployment.queue_name for r in replicas})
            loaded = replicas and all(r.state == Replica.State.RUNNING for r in replicas)
            return node if loaded and node.telemetry.get("queues") == queues else None

        try:
            return wait_for(serving, timeout=timeout, message=f"worker {worker_name} to serve its replicas")
        except AssertionError as error:
            from deployments.models import Deployment

            node = self.node(worker_name)
            state = {
                "node": node and (node.name, node.effective_status, node.telemetry.get("queues")),
                "replicas": list(Replica.objects.values_list("deployment__name", "node__name", "state", "reason")),
                "deployments": list(Deployment.objects.values_list("name", "status", "status_reason")),
            }
            raise AssertionError(f"{error}: {state}") from None

    def wait_online(self, worker_name: str, timeout: float = 30):
        """Wait until the worker has joined and heartbeats (whether or not it has replicas)."""

        def online():
            node = self.node(worker_name)
            return node if node and node.effective_status == "online" else None

        return wait_for(online, timeout=timeout, message=f"worker {worker_name} to be online")

    def scale(self, model_id: str, replicas: int, **changes) -> None:
        from deployments.models import Deployment
        from deployments.services import deployment_update

        deployment = Deployment.objects.get(model__model_id=model_id)
        deployment_update(deployment=deployment, replicas=replicas, **changes)

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if process.poll() is None:
            process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def wait_for(condition, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    """Poll ``condition`` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {message}")


def long_seeds(model: str, messages: list[dict], count: int, min_tokens: int = 100) -> list[int]:
    """Seeds for which the simulated engine's reply to ``messages`` runs to at least ``min_tokens``
    (its replies end naturally after 12 to 96 tokens): for tests that need a request to last."""
    from gpunode.engines.simulated import MAX_LENGTH, MIN_LENGTH, _rng
    from nodeprotocol import GenerationJob

    prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    seeds = []
    for seed in range(1, 10_000):
        job = GenerationJob(
            request_id="", model=model, parameters_billion=1, gpu_profile="", prompt=prompt,
            prompt_tokens=0, max_tokens=0, seed=seed,
        )  # fmt: skip
        if _rng(job, 0).randint(MIN_LENGTH, MAX_LENGTH) >= min(min_tokens, MAX_LENGTH) - 5:
            seeds.append(seed)
            if len(seeds) == count:
                return seeds
    raise AssertionError("no long seeds found")


class ProtocolNode:
    """A GPU node played by the test: it speaks the node protocol by hand over a real WebSocket,
    with a credential of its own, so a test can make it honest, scripted or hostile.

    It registers with the join token, heartbeats in the background (reporting every replica it is
    assigned as loaded when ``serve`` is true, none otherwise) and keeps every message it gets.
    """

    def __init__(
        self,
        platform: LivePlatform,
        name: str,
        *,
        serve: bool = True,
        gpus: list[dict] | None = None,
        registration: dict | None = None,
    ):
        """Register as ``name``, or with ``registration`` (another ProtocolNode's) be that node again."""
        import queue

        from nodeprotocol import VERSION

        self.platform = platform
        self.serve = serve
        if registration is None:
            body = {"token": platform.join_token, "name": name, "engine": "simulated", "slots": 4, "protocol": VERSION}
            body["gpus"] = [{"index": 0, "name": "A100-80GB", "memory_total_mb": 81920}] if gpus is None else gpus
            response = httpx.post(f"{platform.url}/api/workers/register", json=body, timeout=10)
            assert response.status_code == 201, response.text
            registration = response.json()
        self.registration = registration
        self.name = registration["node"]
        self.credential = registration["credential"]
        self.replicas: dict[str, dict] = {}
        self.received: list[dict] = []
        self.inbox: queue.Queue = queue.Queue()
        self.ws = None
        self.closed = None  # the close frame, once the platform closes the socket
        self._stop = False

    def connect(self, *, version: int | None = None) -> ProtocolNode:
        import threading

        from websockets.sync.client import connect

        from nodeprotocol import VERSION, VERSION_HEADER

        headers = {"Authorization": f"Bearer {self.credential}", VERSION_HEADER: str(version or VERSION)}
        url = self.platform.url.replace("http://", "ws://") + "/ws/workers/"
        # Held open across threads rather than in a with block: legacy=True says so.
        self.ws = connect(url, additional_headers=headers, legacy=True)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for raw in self.ws:
                message = json.loads(raw)
                if message.get("type") == "assign" and self.serve:
                    self.replicas = {str(r["id"]): {"state": "running", "reason": ""} for r in message["replicas"]}
                self.received.append(message)
                self.inbox.put(message)
        except ConnectionClosed:
            pass
        self.closed = self.ws.close_code, self.ws.close_reason

    def _beat(self) -> None:
        while not self._stop and self.closed is None:
            try:
                self.send({"type": "heartbeat", "slots": 4, "replicas": self.replicas, "draining": False, "gpus": []})
            except Exception:
                return
            time.sleep(0.5)

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def next(self, kind: str, timeout: float = 15) -> dict:
        """The next message of type ``kind`` (others are skipped, and kept in ``received``)."""
        import queue

        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = self.inbox.get(timeout=remaining)
            except queue.Empty:
                break
            if message.get("type") == kind:
                return message
        raise AssertionError(f"{self.name} got no {kind!r} message within {timeout}s")

    def close(self) -> None:
        self._stop = True
        if self.ws is not None:
            self.ws.close()


class IsolatedPlatform:
    """A web process and a GPU node with a Redis server of their own (sharing the test database),
    for tests that stop and start Redis without disturbing the session's platform."""

    def __init__(self, live: LivePlatform, directory: Path) -> None:
        from gpucloud import embedded_redis

        self.live = live
        self.redis_dir = directory / "redis"
        self.redis_url = embedded_redis.ensure_running(self.redis_dir)
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.env = {**live.env, "REDIS_URL": self.redis_url}
        self.daphne = self._start_daphne()
        command = [sys.executable, "-m", "gpunode", f"--server={self.url}", "--name=isolated"]
        self.node = subprocess.Popen(
            [*command, "--loglevel=WARNING", f"--state-dir={directory / 'node'}"],
            env={**node_environment(), "GPUCLOUD_JOIN_TOKEN": live.join_token},
            cwd=BASE_DIR,
        )

    def _start_daphne(self) -> subprocess.Popen:
        port = self.url.rsplit(":", 1)[1]
        from gpucloud import daphne

        return subprocess.Popen(daphne.command("127.0.0.1", port), env=self.env, cwd=BASE_DIR)

    def stop_redis(self) -> None:
        from gpucloud import embedded_redis

        embedded_redis.stop(self.redis_dir)

    def start_redis(self) -> None:
        from gpucloud import embedded_redis

        embedded_redis.ensure_running(self.redis_dir)

    def close(self) -> None:
        for process in (self.node, self.daphne):
            self.live.stop(process)
        self.stop_redis()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def live_platform(django_db_setup, django_db_blocker, _redis):
    from django.contrib.auth import get_user_model

    from deployments.fleet import join_token_create
    from deployments.services import demo_catalog_ensure

    with django_db_blocker.unblock():
        demo_catalog_ensure()
        _, join_token = join_token_create(name="tests")
        # Staff: it sees the whole fleet in the monitoring API.
        user = get_user_model().objects.create_user(
            "live-user", "live@example.com", "live user password", is_staff=True
        )
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "INFERENCE_QUEUE_TIMEOUT": "15",
        "LOG_LEVEL": "WARNING",
        # Self-service accounts: the live server writes its emails to files, which browser tests read.
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": tempfile.mkdtemp(prefix="gpucloud-live-mail-"),
        "ACCOUNT_EMAILS_PER_HOUR": "1000",  # every browser test signs up from 127.0.0.1
    }
    from gpucloud.daphne import command as daphne_command

    daphne = subprocess.Popen(daphne_command("127.0.0.1", port), env=env, cwd=BASE_DIR)
    platform = LivePlatform(
        url=f"http://127.0.0.1:{port}", env=env, join_token=join_token, user=user, daphne=daphne, workers=[]
    )
    platform.start_worker("main")
    try:
        wait_for(lambda: _healthy(platform.url), timeout=60, message="the live platform to become healthy")
        with django_db_blocker.unblock():
            platform.wait_serving("main")
        yield platform
    finally:
        for process in [*platform.workers, daphne]:
            platform.stop(process)


@pytest.fixture
def live(live_platform, django_db_blocker):
    """The live platform; the test may use the database, and what it writes is committed."""
    with django_db_blocker.unblock():
        yield live_platform


@pytest.fixture
def fleet(live):
    """The live platform with no worker: the test starts its own, and they are stopped after it.
    The shared worker comes back afterwards for the other live tests."""
    for worker in live.workers:
        live.stop(worker)
    live.workers.clear()
    yield live
    for worker in live.workers:
        live.stop(worker, signal.SIGKILL)
    live.workers.clear()
    from deployments.models import Deployment
    from deployments.services import demo_catalog_ensure

    Deployment.objects.update(replicas=1, placement=Deployment.Placement.BINPACK)
    demo_catalog_ensure()
    live.start_worker("main")
    live.wait_serving("main")


@pytest.fixture(autouse=True)
def _empty_billing_state(_redis):
    """Every test starts with no billing state in Redis (balances, reservations, token windows),
    as after a restart: user ids come round again between tests, and a test whose transaction is
    rolled back never frees what its requests reserved (settlement frees on commit)."""
    from billing.redis_state import forget_all

    forget_all()


# --- Browser tests (Playwright driving Debian's Chromium) ------------------------------------

CHROMIUM = Path(os.environ.get("GPUCLOUD_CHROMIUM", "/usr/bin/chromium"))
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SCREENSHOTS = BASE_DIR / "var" / "screenshots"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so that fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# Per module, not per session (issue 11, product pages): while Playwright's sync API runs, its event
# loop is the thread's running loop, and every later test calling asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system (``apt-get install chromium``; .ci/run does), never a
    browser download. Without it the browser tests skip, except in CI, where they fail."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set GPUCLOUD_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which Django would take for an async
    # context and refuse the tests' own database queries in.
    # Only while the browser runs: other tests keep Django's check.
    allowed = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            yield chromium
            chromium.close()
            # Django keeps connections per async context, and Playwright's event loop makes one: close
            # the tests' connections made in it, or PostgreSQL refuses to drop the test database.
            from django.db import connections

            connections.close_all()
    finally:
        if allowed is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = allowed


@pytest.fixture(params=list(VIEWPORTS))
def browser_page(request, browser, live):
    """A fresh browser tab on the live platform, once at desktop and once at phone width
    (``page.viewport_name``). A failing test leaves a full-page screenshot in var/screenshots/."""
    name = request.param
    context = browser.new_context(viewport=VIEWPORTS[name], base_url=live.url, is_mobile=name == "phone")
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.viewport_name = name
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failure: {path}")
    context.close()
    # The test's database work ran under Playwright's event loop, in a context of its own (asgiref's
    # Local): close the connections it opened, or PostgreSQL refuses to drop the test database.
    from django.db import connections

    connections.close_all()


def browser_login(page, username: str, password: str) -> None:
    """Log in through the dashboard's login form, as a person would."""
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


@pytest.fixture
def logged_in_page(browser_page, live):
    """``browser_page`` with the live platform's (staff) user logged in."""
    browser_login(browser_page, live.user.username, "live user password")
    return browser_page

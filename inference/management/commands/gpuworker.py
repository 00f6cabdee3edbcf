"""``manage.py gpuworker --server URL --token TOKEN``: join this machine to the fleet and serve.

First the node registers with the join token and receives its own credential and the Redis URL
of the task queue; then the command re-executes itself with that Redis URL (unless REDIS_URL is
set) and runs a Celery worker whose queues the server assigns over the fleet WebSocket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from deployments.agent import FleetAgent, GpuTelemetry, JoinRefused, register
from deployments.gpus import GPU_PROFILES
from deployments.models import Engine
from inference.worker import CONTROL_QUEUE, FleetStep, attach_agent

STATE_ENV = "GPUCLOUD_NODE_STATE"


class Command(BaseCommand):
    help = "Join this machine to the GPU fleet with a join token and serve the deployments assigned to it."

    def add_arguments(self, parser):
        parser.add_argument("--server", default=os.environ.get("GPUCLOUD_SERVER"), help="e.g. http://10.0.0.5:8000")
        parser.add_argument("--token", default=os.environ.get("GPUCLOUD_JOIN_TOKEN"), help="A join token (gpcj_…).")
        parser.add_argument("--name", default=socket.gethostname(), help="Node name (a number is appended).")
        parser.add_argument("--slots", type=int, default=8, help="Requests this node runs at once (default 8).")
        parser.add_argument(
            "--gpus",
            default=os.environ.get("GPUCLOUD_GPUS", "A100-80GB"),
            help=f"Simulated GPUs when the machine has no NVIDIA GPU, comma-separated from: {', '.join(GPU_PROFILES)}.",
        )
        parser.add_argument("--engine", default=Engine.SIMULATED, choices=Engine.values)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, **options):
        if os.environ.get(STATE_ENV):
            self.serve(json.loads(os.environ[STATE_ENV]), options["loglevel"])
        else:
            self.join(options)

    def join(self, options) -> None:
        if not options["server"] or not options["token"]:
            raise CommandError("Give --server and --token (or GPUCLOUD_SERVER and GPUCLOUD_JOIN_TOKEN).")
        if options["slots"] < 1:
            raise CommandError("--slots must be at least 1.")
        profiles = [p.strip() for p in options["gpus"].split(",") if p.strip()]
        unknown = [p for p in profiles if p not in GPU_PROFILES]
        if unknown:
            raise CommandError(f"Unknown GPU profile {unknown[0]!r}; choose from {', '.join(GPU_PROFILES)}.")
        telemetry = GpuTelemetry(profiles)
        try:
            joined = register(
                options["server"],
                options["token"],
                name=options["name"],
                host=socket.gethostname(),
                engine=options["engine"],
                slots=options["slots"],
                gpus=telemetry.inventory(),
            )
        except JoinRefused as refusal:
            raise CommandError(str(refusal)) from None
        self.stderr.write(f"Joined the fleet at {options['server']} as {joined['node']}.")
        state = {**joined, "server": options["server"], "slots": options["slots"], "profiles": profiles}
        env = {**os.environ, STATE_ENV: json.dumps(state)}
        env.setdefault("REDIS_URL", joined["redis_url"])
        sys.stdout.flush()
        sys.stderr.flush()
        # Start afresh so that settings pick up the fleet's Redis.
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    def serve(self, state: dict, loglevel: str) -> None:
        from gpucloud.celery import app

        def refused(message: str) -> None:
            self.stderr.write(f"{message} Stopping.")
            os.kill(os.getpid(), signal.SIGTERM)

        agent = FleetAgent(
            server=state["server"],
            credential=state["credential"],
            slots=state["slots"],
            telemetry=GpuTelemetry(state["profiles"]),
            interval=state.get("heartbeat_interval", settings.WORKER_HEARTBEAT_INTERVAL),
            websocket_path=state.get("websocket_path", "/ws/workers/"),
            on_refused=refused,
        )
        attach_agent(agent, state["node"])
        app.steps["consumer"].add(FleetStep)
        agent.start()
        app.worker_main(
            [
                "worker",
                f"--hostname={state['node']}",
                "--pool=threads",
                f"--concurrency={state['slots']}",
                f"--queues={CONTROL_QUEUE}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )

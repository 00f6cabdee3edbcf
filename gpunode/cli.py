"""``python -m gpunode --server URL``: join this machine to the fleet and serve what it is given.

The join token comes from ``GPUCLOUD_JOIN_TOKEN`` or ``--token-file`` (``--token`` works too, but
shows in ``ps``). The node registers once, keeps its credential in ``--state-dir`` (0600) and
reuses it when started again; then it speaks only the node protocol over its WebSocket.
SIGTERM drains (finish what is held, then leave); a second SIGTERM or SIGINT stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from gpunode.agent import CredentialUnknown, NodeAgent
from gpunode.registration import JoinRefused, NodeState, read_join_token, register
from gpunode.telemetry import GpuTelemetry
from nodeprotocol import ENGINE_NAMES
from nodeprotocol.gpus import GPU_PROFILES

logger = logging.getLogger("gpunode")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpunode",
        description="Join this machine to a GPU Cloud fleet and serve the deployments the platform assigns to it.",
    )
    parser.add_argument("--server", default=os.environ.get("GPUCLOUD_SERVER"), help="e.g. http://10.0.0.5:8000")
    parser.add_argument(
        "--token-file", default=os.environ.get("GPUCLOUD_JOIN_TOKEN_FILE"), help="A file holding the join token."
    )
    parser.add_argument(
        "--token",
        default=None,
        help="The join token (gpcj_…); ps shows it: prefer GPUCLOUD_JOIN_TOKEN or --token-file.",
    )
    parser.add_argument("--name", default=socket.gethostname(), help="Node name (a number is appended).")
    parser.add_argument("--slots", type=int, default=8, help="Requests this node runs at once (default 8).")
    parser.add_argument(
        "--gpus",
        default=os.environ.get("GPUCLOUD_GPUS", "A100-80GB"),
        help=f"Simulated GPUs when the machine has no NVIDIA GPU, comma-separated from: {', '.join(GPU_PROFILES)}.",
    )
    parser.add_argument("--engine", default="simulated", choices=ENGINE_NAMES)
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("GPUCLOUD_NODE_STATE_DIR"),
        help="Where the node keeps its credential (default ~/.gpucloud/node-<name>).",
    )
    parser.add_argument("--loglevel", default=os.environ.get("LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def fail(message: str) -> int:
    print(f"gpunode: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.server:
        return fail("Give --server (or GPUCLOUD_SERVER).")
    if args.slots < 1:
        return fail("--slots must be at least 1.")
    profiles = [p.strip() for p in args.gpus.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in GPU_PROFILES]
    if unknown:
        return fail(f"Unknown GPU profile {unknown[0]!r}; choose from {', '.join(GPU_PROFILES)}.")
    telemetry = GpuTelemetry(profiles)
    state = NodeState(Path(args.state_dir or Path.home() / ".gpucloud" / f"node-{args.name}").expanduser())
    try:
        state.lock()
        token = args.token or read_join_token(args.token_file)
        return serve(args, state, token, telemetry)
    except (JoinRefused, OSError) as error:
        return fail(str(error))


def _registration(args, state: NodeState, token: str, telemetry: GpuTelemetry) -> dict:
    saved = state.load(server=args.server, engine=args.engine)
    if saved is not None:
        return saved
    if not token:
        raise JoinRefused("Give the join token in GPUCLOUD_JOIN_TOKEN or --token-file (an operator or host makes one).")
    joined = register(
        args.server,
        token,
        name=args.name,
        host=socket.gethostname(),
        engine=args.engine,
        slots=args.slots,
        gpus=telemetry.inventory(),
    )
    state.save(joined, server=args.server, engine=args.engine)
    logger.info("Joined the fleet at %s as %s", args.server, joined["node"])
    return joined


def serve(args, state: NodeState, token: str, telemetry: GpuTelemetry) -> int:
    while True:
        joined = _registration(args, state, token, telemetry)
        agent = NodeAgent(
            server=args.server,
            credential=joined["credential"],
            slots=args.slots,
            telemetry=telemetry,
            interval=float(joined.get("heartbeat_interval") or 1.0),
            websocket_path=joined.get("websocket_path") or "/ws/workers/",
        )
        try:
            asyncio.run(_run(agent))
        except CredentialUnknown:
            # The platform forgot this node (a new database): join again with the token.
            logger.warning("The server does not know this node's saved credential; joining again.")
            state.forget()
            continue
        return 0


async def _run(agent: NodeAgent) -> None:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if signum == signal.SIGTERM and not agent.draining:
            agent.drain()
        else:  # a second signal, or Ctrl-C: stop now
            main_task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await agent.run()
    except asyncio.CancelledError:
        logger.info("Stopped.")

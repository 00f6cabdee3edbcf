"""Benchmark the GPU host marketplace: dispatch through a community node against a trusted node,
and what verifying community nodes costs in trusted-node time.

a. The same figures on one trusted node, then on one community node (a host's, joined with the
   host's own token; its requests credit the host's earnings at settlement): p50 latency at
   concurrency 1, requests per second at concurrency 32 (instant engine), and a 256-token stream's
   tokens per second (the paced simulated engine: the GPU's pace plus the platform's overhead).
b. Verification: a community node and a trusted node, VERIFY_SAMPLE_RATE=1 in the web process;
   deterministic requests (a seed) on the community node are each re-run on the trusted node. The
   cost is the trusted node's busy time per re-run (its job's start to end, from the usage records
   of the same request run on the trusted node directly) x the re-runs 1,000 requests cause at the
   default rate of 0.05.

    .venv/bin/python bench/marketplace.py [--parts ab] [--requests 200] [--concurrency 32]
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports.
from __future__ import annotations

import os
import sys

_BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BASE_DIR)

import argparse
import asyncio
import statistics
import time

from bench.harness import Platform, embedded_redis_running, exit_on_sigterm, setup_django
from bench.load import chat_body, chat_stream, client_for, run_load

MODEL = "llama-3.1-8b-instruct"
DEFAULT_RATE = 0.05


def _community_token(label: str) -> str:
    from django.contrib.auth import get_user_model

    from marketplace.services import host_become, host_join_token_create

    user, _ = get_user_model().objects.get_or_create(username=f"host-{label}")
    host = host_become(user=user, display_name=f"Bench host {label}")
    return host_join_token_create(host=host, name=label)[1]


class HostPlatform(Platform):
    """A bench platform whose nodes join as one host's community nodes (``community=True``) or, as
    usual, with the operator's (trusted) token."""

    def __init__(self, *, community: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.community = community
        self.community_token = ""

    def node_environment(self, env=None):
        if not self.community:
            return super().node_environment(env)
        self.community_token = self.community_token or _community_token(self.label)
        operators, self.join_token = self.join_token, self.community_token
        try:
            return super().node_environment(env)
        finally:
            self.join_token = operators


def _figures(platform: Platform, args, label: str) -> None:
    body = chat_body(MODEL, "Benchmark", args.max_tokens)
    idle = asyncio.run(run_load(platform.url, platform.key, body=body, total=args.idle_requests, concurrency=1))
    busy = asyncio.run(
        run_load(platform.url, platform.key, body=body, total=args.requests, concurrency=args.concurrency)
    )
    print(
        f"  {label:9}  p50 at c=1 {idle.latency_ms(50):7.1f} ms   RPS at c={args.concurrency} {busy.rps:6.1f} "
        f"(p50 {busy.latency_ms(50):.0f} ms, errors {busy.errors})",
        flush=True,
    )


async def _stream_rate(platform: Platform, count: int) -> float:
    """Tokens per second of 256-token streams, one at a time (the paced engine)."""
    rates = []
    async with client_for(platform.url, platform.key, 1) as client:
        for n in range(count):
            body = chat_body(MODEL, f"Stream {n}", 256, stream=True, stream_options={"include_usage": True})
            body["seed"] = 7 + n
            sample = await chat_stream(client, body)
            if sample.ok and sample.first_token is not None and len(sample.chunk_times) > 1:
                rates.append((len(sample.chunk_times) - 1) / (sample.chunk_times[-1] - sample.chunk_times[0]))
    return statistics.median(rates) if rates else float("nan")


def part_a(args) -> None:
    print("a. dispatch through a trusted node, then through a community node (1 node each)", flush=True)
    # Alternating order, so that whatever the machine's load does over time hits both alike.
    for round_ in range(args.rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for community in order:
            label = "community" if community else "trusted"
            with HostPlatform(
                community=community, workers=1, slots=args.slots, models=[MODEL], label=f"mkt-{label}"
            ) as platform:
                platform.warm_up(MODEL)
                _figures(platform, args, label)
    from marketplace.models import EarningEntry

    print(f"             community nodes' hosts credited for {EarningEntry.objects.count()} requests", flush=True)
    for trust in ("trusted", "community"):
        community = trust == "community"
        label = f"mkt-s-{trust}"
        with HostPlatform(community=community, workers=1, instant=False, models=[MODEL], label=label) as platform:
            rate = asyncio.run(_stream_rate(platform, args.streams))
            print(f"  {trust:9}  256-token stream: {rate:.1f} tokens/s (median of {args.streams})", flush=True)


def part_b(args) -> None:
    from inference.models import UsageRecord
    from marketplace.models import VerificationCheck

    print("b. verification: every deterministic request of a community node re-run on a trusted node", flush=True)
    env = {"VERIFY_SAMPLE_RATE": "1"}
    with HostPlatform(workers=1, slots=args.slots, instant=False, models=[MODEL], label="mkt-verify", env=env) as p:
        trusted = p.workers[0]
        p.community = True
        community = p.start_worker()
        p.wait_ready([trusted, community])  # a replica on each: customers' requests go to both
        sent = []
        started = time.perf_counter()
        for n in range(args.verify_requests):
            body = chat_body(MODEL, f"Check {n}", args.verify_max_tokens, seed=100 + n)
            response = p.client.post("/v1/chat/completions", json=body, timeout=60)
            if response.status_code == 200:
                sent.append(response.headers["x-request-id"])
        deadline = time.monotonic() + 120
        while VerificationCheck.objects.filter(outcome="pending").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        checks = VerificationCheck.objects.filter(request_id__in=sent)
        community_served = UsageRecord.objects.filter(request_id__in=sent).exclude(worker=trusted.node).count()
        outcomes = {o: checks.filter(outcome=o).count() for o in ("match", "mismatch", "error", "pending")}
        # The trusted node's time per re-run: the same jobs' latency when it serves them directly.
        direct = [
            p.client.post("/v1/chat/completions", json=chat_body(MODEL, f"Check {n}", args.verify_max_tokens,
                                                                 seed=100 + n), timeout=60)
            for n in range(min(args.verify_requests, 10))
        ]  # fmt: skip
        ids = [r.headers["x-request-id"] for r in direct if r.status_code == 200]
        per_job = statistics.fmean(
            UsageRecord.objects.filter(request_id__in=ids, worker=trusted.node).values_list("latency_ms", flat=True)
            or [float("nan")]
        )
    print(
        f"  {len(sent)} requests ({community_served} on the community node) in {elapsed:.1f}s: checks {outcomes}",
        flush=True,
    )
    reruns = DEFAULT_RATE * 1000
    print(
        f"  one re-run of {args.verify_max_tokens} tokens: ~{per_job:.0f} ms of a trusted slot; at the default "
        f"rate ({DEFAULT_RATE}) 1,000 community requests cost {reruns:.0f} re-runs = "
        f"{reruns * per_job / 1000:.1f} trusted-slot-seconds",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="ab")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--idle-requests", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="part a's rounds (the order alternates)")
    parser.add_argument("--verify-requests", type=int, default=20)
    parser.add_argument("--verify-max-tokens", type=int, default=64)
    args = parser.parse_args()
    exit_on_sigterm()
    setup_django()
    print(f"marketplace benchmark: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    with embedded_redis_running():
        if "a" in args.parts:
            part_a(args)
        if "b" in args.parts:
            part_b(args)


if __name__ == "__main__":
    main()

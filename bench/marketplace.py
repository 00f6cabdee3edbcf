"""Benchmark the marketplace's dispatch: requests served by a community node against a trusted one.

Both kinds of node speak the same node protocol; what differs is who joined them (an operator's
join token makes a ``trusted`` node, a host's a ``community`` one), and the marketplace's work
around them (reliability counters, per-queue load in heartbeats, the periodic work). One platform
(bench/harness.py: Daphne, its own SQLite database and embedded Redis in ``var/bench/``) runs two
nodes, one of each trust, and two deployments of identical models (same size, same simulated GPU
pace), each of which fits only on its own node: ``bench-trusted`` on the trusted node,
``bench-community`` on the community node (the demo's deployments are stopped). Each round
measures one side, then the other, with the same requests:

1. instant engine (SIMULATED_ENGINE_INSTANT on the nodes): non-streaming chat, max_tokens=16,
   p50/p95 latency at concurrency 1, then requests per second (and p50) at concurrency 32;
2. paced engine (A100 pace): 256-token streams (n=4 choices of 64 tokens, with seeds for which
   all four run that long), tokens per second one stream at a time, and aggregate at 8 at once.

The nodes are restarted between the two phases (instant, then paced), trusted first.
What the verification of community results costs in trusted-node time is the verification's
own benchmark and is not measured here.

    .venv/bin/python bench/marketplace.py [--rounds 3] [--c1-requests 150] [--c32-requests 640] [--streams 10]
    .venv/bin/python bench/marketplace.py --rounds 1 --c1-requests 10 --c32-requests 64 --streams 2  # smoke
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from bench import harness
from bench.load import Sample, chat_body, percentile, run_load

SIDES = ("trusted", "community")
SLOTS = 32
PARAMETERS = Decimal("8.03")
MEMORY_GB = 60  # more than half of the nodes' one A100-80GB: each deployment fits only on its own node
STREAM_CHOICES, STREAM_MAX_TOKENS = 4, 64
STREAM_PROMPT = "Write a long answer about GPU markets."


def model_id(side: str) -> str:
    return f"bench-{side}-8b"


# --- the platform ----------------------------------------------------------------------------


class Platform(harness.Platform):
    """The harness's platform, started with no node (/health answers 503 until one joins): the nodes
    join afterwards, each with the join token of its trust (start_nodes)."""

    def wait_ready(self, workers, timeout=None) -> None:
        if workers:
            super().wait_ready(workers, timeout)


def setup_catalog() -> dict[str, str]:
    """Stop the demo's deployments, create one model and deployment per side; returns the community
    join token (a host's: its nodes are community nodes)."""
    from django.contrib.auth import get_user_model

    from deployments.fleet import join_token_create
    from deployments.models import CatalogModel, Deployment, JoinToken, Trust
    from deployments.services import deployment_create, deployment_stop

    for deployment in Deployment.objects.exclude(status=Deployment.Status.STOPPED):
        if not deployment.model.model_id.startswith("bench-"):
            deployment_stop(deployment=deployment)
    for side in SIDES:
        model, _ = CatalogModel.objects.update_or_create(
            model_id=model_id(side),
            defaults={
                "family": "bench",
                "parameters_billion": PARAMETERS,
                "context_length": 8192,
                "price_input_per_million": Decimal("0.10"),
                "price_output_per_million": Decimal("0.20"),
                "memory_gb": {"fp16": MEMORY_GB},
            },
        )
        if not Deployment.objects.filter(name=f"bench-{side}").exists():
            deployment_create(name=f"bench-{side}", model=model)
    host, _ = get_user_model().objects.get_or_create(username="bench-host")
    token, plaintext = join_token_create(name="bench community host", created_by=host)
    JoinToken.objects.filter(pk=token.pk).update(trust=Trust.COMMUNITY)
    return {"community": plaintext}


def start_nodes(platform: Platform, community_token: str, *, instant: bool) -> dict[str, harness.Worker]:
    """One trusted node, then one community node; waits until each serves its side's deployment."""
    from deployments.models import Deployment, Replica, WorkerNode

    for worker in list(platform.workers):
        platform.stop_worker(worker)
    platform.workers.clear()
    platform.instant = instant
    operator_token = platform.join_token
    workers = {}
    for side in SIDES:
        name = f"{platform.label}-{side}-{'instant' if instant else 'paced'}"
        # The harness puts its join token in the node's environment: the host's for the community node.
        platform.join_token = community_token if side == "community" else operator_token
        try:
            worker = platform.start_worker(name, SLOTS, "--gpus=A100-80GB")
        finally:
            platform.join_token = operator_token
        deployment = Deployment.objects.get(name=f"bench-{side}")

        def serving(worker=worker, deployment=deployment) -> bool:
            if not worker.alive:
                raise harness.PlatformError(f"{worker.name} exited; see {worker.log}")
            node = WorkerNode.objects.filter(name__startswith=f"{worker.name}-").order_by("-pk").first()
            if node is None or deployment.queue_name not in (node.telemetry or {}).get("queues", []):
                return False
            worker.node = node.name
            return Replica.objects.filter(deployment=deployment, node=node, state="running").exists()

        platform._wait(serving, 60, f"the {side} node to serve bench-{side}")
        node = WorkerNode.objects.get(name=worker.node)
        assert node.trust == side, f"{worker.node} joined as {node.trust}, not {side}"
        workers[side] = worker
    return workers


# --- measurements ----------------------------------------------------------------------------


def stream_seeds(model: str, count: int) -> list[int]:
    """Seeds for which all STREAM_CHOICES choices of the simulated engine run to STREAM_MAX_TOKENS."""
    from gpunode.engines.simulated import MAX_LENGTH, MIN_LENGTH, _rng
    from nodeprotocol import GenerationJob

    seeds = []
    for seed in range(1, 100_000):
        job = GenerationJob(
            request_id="", model=model, parameters_billion=1, gpu_profile="", prompt=f"user: {STREAM_PROMPT}",
            prompt_tokens=0, max_tokens=0, seed=seed, n=STREAM_CHOICES,
        )  # fmt: skip
        if all(_rng(job, i).randint(MIN_LENGTH, MAX_LENGTH) >= STREAM_MAX_TOKENS for i in range(STREAM_CHOICES)):
            seeds.append(seed)
            if len(seeds) == count:
                return seeds
    raise SystemExit("no seeds found for 256-token streams")


@dataclass
class Stream:
    ok: bool = False
    error: str = ""
    total: float = math.nan
    tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.total if self.total else math.nan


async def stream_256(client: httpx.AsyncClient, model: str, seed: int) -> Stream:
    body = chat_body(
        model, STREAM_PROMPT, STREAM_MAX_TOKENS, n=STREAM_CHOICES, seed=seed, temperature=1.0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    result, started, done = Stream(), time.perf_counter(), False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}"
                return result
            async for line in response.aiter_lines():
                data = line.removeprefix("data: ")
                if not line.startswith("data: "):
                    continue
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = f"stream {chunk['error'].get('code')}"
                elif chunk.get("usage"):
                    result.tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as error:
        result.error = type(error).__name__
    result.total = time.perf_counter() - started
    result.ok = done and not result.error
    return result


async def stream_batch(url: str, key: str, model: str, seeds: list[int], concurrency: int):
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits, trust_env=False
    ) as client:
        await stream_256(client, model, seeds[0])  # warm the connection; not counted
        queue, results = list(seeds), []

        async def one_client() -> None:
            while queue:
                results.append(await stream_256(client, model, queue.pop()))

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return results, time.perf_counter() - started


@dataclass
class Figures:
    c1: list[Sample] = field(default_factory=list)
    c32: list[Sample] = field(default_factory=list)
    c32_seconds: float = 0.0
    streams1: list[Stream] = field(default_factory=list)
    streams8: list[Stream] = field(default_factory=list)
    streams8_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def rows(f: Figures) -> list[tuple[str, float]]:
    c1 = [s.latency for s in f.c1 if s.ok]
    c32 = [s.latency for s in f.c32 if s.ok]
    s1 = [s.tokens_per_second for s in f.streams1 if s.ok]
    s8_tokens = sum(s.tokens for s in f.streams8 if s.ok)
    return [
        ("c=1 non-streaming p50 ms", ms(c1, 50)),
        ("c=1 non-streaming p95 ms", ms(c1, 95)),
        ("c=32 requests/s", len(c32) / f.c32_seconds if f.c32_seconds else math.nan),
        ("c=32 p50 ms", ms(c32, 50)),
        ("256-tok stream c=1 tokens/s p50", statistics.median(s1) if s1 else math.nan),
        ("256-tok stream c=8 aggregate tok/s", s8_tokens / f.streams8_seconds if f.streams8_seconds else math.nan),
    ]


def print_table(figures: dict[str, Figures], args) -> None:
    trusted, community = rows(figures["trusted"]), rows(figures["community"])
    print(
        f"\nmarketplace benchmark: {args.rounds} interleaved round(s) per figure; one node of each trust x {SLOTS} "
        f"slots, identical models; {os.cpu_count()} CPU cores shared by client, Daphne, nodes and Redis"
    )
    print(f"{'':<38} {'trusted':>10} {'community':>10} {'change':>8}")
    for (label, old), (_, new) in zip(trusted, community, strict=True):
        change = (new - old) / old * 100 if old and not math.isnan(old) and not math.isnan(new) else math.nan
        print(f"{label:<38} {old:>10.1f} {new:>10.1f} {change:>+7.1f}%")
    for name, f in figures.items():
        errors = ", ".join(f"{e} x{f.errors.count(e)}" for e in sorted(set(f.errors))) or "none"
        tokens = sorted({s.tokens for s in f.streams1 + f.streams8 if s.ok})
        print(f"{name}: errors: {errors}; completion tokens per stream: {tokens}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--c1-requests", type=int, default=150, help="per side and round")
    parser.add_argument("--c32-requests", type=int, default=640, help="per side and round")
    parser.add_argument("--streams", type=int, default=10, help="256-token streams at c=1, per side and round")
    parser.add_argument("--concurrent-streams", type=int, default=24, help="streams at c=8, per side and round")
    args = parser.parse_args()

    harness.exit_on_sigterm()
    harness.setup_django()
    started = time.monotonic()
    figures = {side: Figures() for side in SIDES}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"marketplace benchmark: load average {load}", flush=True)
    with harness.embedded_redis_running(), Platform(workers=0, models=(), label="marketplace") as platform:
        community_token = setup_catalog()["community"]
        start_nodes(platform, community_token, instant=True)
        for side in SIDES:
            platform.warm_up(model_id(side))
        for round_ in range(1, args.rounds + 1):
            for side in SIDES:
                body = chat_body(model_id(side), "Benchmark the marketplace.", 16)
                c1 = asyncio.run(run_load(platform.url, platform.key, body=body, total=args.c1_requests, concurrency=1))
                c32 = asyncio.run(
                    run_load(platform.url, platform.key, body=body, total=args.c32_requests, concurrency=32)
                )
                f = figures[side]
                f.c1 += c1.samples
                f.c32 += c32.samples
                f.c32_seconds += c32.elapsed
                f.errors += [s.error for s in c1.samples + c32.samples if not s.ok]
                print(
                    f"round {round_} {side:<9} c=1 p50 {c1.latency_ms(50):6.1f} ms | c=32 {c32.rps:6.1f} req/s",
                    flush=True,
                )

        start_nodes(platform, community_token, instant=False)
        count = max(args.streams, args.concurrent_streams)
        for round_ in range(1, args.rounds + 1):
            for side in SIDES:
                model = model_id(side)
                seeds = stream_seeds(model, count)
                one, _ = asyncio.run(stream_batch(platform.url, platform.key, model, seeds[: args.streams], 1))
                many, seconds = asyncio.run(
                    stream_batch(platform.url, platform.key, model, seeds[: args.concurrent_streams], 8)
                )
                f = figures[side]
                f.streams1 += one
                f.streams8 += many
                f.streams8_seconds += seconds
                f.errors += [s.error for s in one + many if not s.ok]
                ok1 = [s.tokens_per_second for s in one if s.ok]
                print(
                    f"round {round_} {side:<9} stream c=1 {statistics.median(ok1) if ok1 else math.nan:6.1f} tok/s | "
                    f"c=8 {sum(s.tokens for s in many if s.ok) / seconds:7.1f} tok/s aggregate",
                    flush=True,
                )
    print_table(figures, args)
    print(f"(total {time.monotonic() - started:.0f} s; logs in {harness.LOG_DIR})")


if __name__ == "__main__":
    main()

"""Benchmark the gateway's own cost: non-streaming chat requests against an instant engine.

Starts a private platform (bench/harness.py: SQLite and an embedded Redis in var/bench/, or
DATABASE_URL/REDIS_URL if set; Daphne, then GPU workers joined with a join token) with
SIMULATED_ENGINE_INSTANT=true, then sends requests at concurrency 1 and 32 and prints p50/p95
latency and requests per second, once with billing on (admission and charges) and once with it
off, side by side.

    .venv/bin/python bench/gateway.py [--requests 400] [--workers 1] [--slots 32] [--max-tokens 16]
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports.
from __future__ import annotations

import os
import sys

_BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BASE_DIR)

import argparse
import asyncio

from bench.harness import Platform, embedded_redis_running, exit_on_sigterm, setup_django
from bench.load import chat_body, run_load

MODEL = "llama-3.1-8b-instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--slots", type=int, default=32, help="requests each worker runs at once")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    exit_on_sigterm()
    setup_django()
    body = chat_body(MODEL, "Benchmark the gateway.", args.max_tokens)
    print(
        f"gateway benchmark: {args.requests} non-streaming requests per level, instant simulated engine, "
        f"{args.workers} worker(s) x {args.slots} slots, max_tokens={args.max_tokens}, "
        f"{os.cpu_count()} CPU cores (client, Daphne, workers and Redis share them); billing on, then off"
    )
    print(f"{'billing':>8} {'concurrency':>11} {'ok':>6} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
    with embedded_redis_running():
        for billing in ("on", "off"):
            env = {"BILLING_ENABLED": "true" if billing == "on" else "false"}
            with Platform(
                workers=args.workers,
                slots=args.slots,
                instant=True,
                models=[MODEL],
                label=f"gateway-{billing}",
                env=env,
            ) as platform:
                platform.warm_up(MODEL)
                for concurrency in (1, 32):
                    load = run_load(platform.url, platform.key, body=body, total=args.requests, concurrency=concurrency)
                    r = asyncio.run(load)
                    print(
                        f"{billing:>8} {concurrency:>11} {len(r.ok):>6} {r.errors:>6} "
                        f"{r.latency_ms(50):>8.1f} {r.latency_ms(95):>8.1f} {r.rps:>8.1f}"
                        + (f"   errors: {r.error_kinds}" if r.errors else ""),
                        flush=True,
                    )


if __name__ == "__main__":
    main()

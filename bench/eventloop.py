"""Benchmark: does a web process stay responsive while it takes in large request bodies?

Starts a private platform (bench/harness.py), then sends a few large chat bodies at once (by
default 3 x 30 MB: one message of 30 MB of text, which the server parses, validates and counts)
while another client asks ``GET /health`` every 20 ms, and prints /health's latency before and
during the large bodies (p50, p95, max) and what the large requests got.

    .venv/bin/python bench/eventloop.py [--bodies 3] [--megabytes 30]
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports.
from __future__ import annotations

import os
import sys

_BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BASE_DIR)

import argparse
import json
import multiprocessing
import statistics
import threading
import time

import httpx

from bench.harness import Platform, embedded_redis_running, exit_on_sigterm, setup_django

MODEL = "llama-3.1-8b-instruct"


def _health_latencies(url: str, stop, ready) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get("/health")
            except httpx.HTTPError:  # a timeout counts, at what it waited
                pass
            latencies.append((time.perf_counter() - started) * 1000)
            ready.set()
            stop.wait(0.02)
    return latencies


def _watch(url: str, stop, ready, results) -> None:
    results.send(_health_latencies(url, stop, ready))


class HealthWatcher:
    """Asks ``GET /health`` every 20 ms from a process of its own: in a thread of the process that
    sends the large bodies, it measured that process's own waits for its GIL (httpx writing 30 MB
    bodies) along with the server's answers."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop, self.ready = context.Event(), context.Event()
        self._results, sending = context.Pipe(duplex=False)
        self._process = context.Process(target=_watch, args=(url, self.stop, self.ready, sending), daemon=True)

    def __enter__(self) -> HealthWatcher:
        self._process.start()
        self.ready.wait(30)  # asking already
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.latencies: list[float] = self._results.recv()
        self._process.join(10)


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies) or [0.0]
    p95 = ordered[max(int(len(ordered) * 0.95) - 1, 0)]
    return f"{len(ordered):>5} {statistics.median(ordered):>8.1f} {p95:>8.1f} {ordered[-1]:>8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=30)
    args = parser.parse_args()
    exit_on_sigterm()
    setup_django()
    text = ("word " * (args.megabytes * 1024 * 1024 // 5))[: args.megabytes * 1024 * 1024]
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    # Encoded once, here, rather than in each sender thread.
    encoded = json.dumps(body).encode()
    headers_json = {"Content-Type": "application/json"}
    with embedded_redis_running(), Platform(workers=1, slots=8, instant=True, models=[MODEL], label="eventloop") as p:
        p.warm_up(MODEL)
        with HealthWatcher(p.url) as baseline:
            time.sleep(2)

        results: list[str] = []

        def post() -> None:
            headers = {"Authorization": f"Bearer {p.key}", **headers_json}
            response = httpx.post(f"{p.url}/v1/chat/completions", content=encoded, headers=headers, timeout=300)
            code = response.json().get("error", {}).get("code") if response.status_code != 200 else ""
            results.append(f"{response.status_code} {code or ''}".strip())

        with HealthWatcher(p.url) as watcher:
            started = time.perf_counter()
            senders = [threading.Thread(target=post) for _ in range(args.bodies)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            elapsed = time.perf_counter() - started

    print(
        f"event loop benchmark: {args.bodies} x {args.megabytes} MB chat bodies at once, /health every 20 ms; "
        f"{os.cpu_count()} CPU cores shared by client, Daphne, node and Redis"
    )
    print(f"{'/health':>22} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    print(f"{'before (idle)':>22} {_summary(baseline.latencies)}")
    print(f"{'during large bodies':>22} {_summary(watcher.latencies)}")
    print(f"large requests: {sorted(results)} in {elapsed:.1f} s")
    slow = sum(latency > 100 for latency in watcher.latencies)
    print(f"/health over 100 ms while they were processed: {slow} of {len(watcher.latencies)}")


if __name__ == "__main__":
    main()

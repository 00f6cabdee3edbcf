"""Benchmark the gateway's own cost: non-streaming chat requests against an instant engine.

Starts a private platform (Daphne + GPU workers, SQLite and an embedded Redis in var/bench/, or
DATABASE_URL/REDIS_URL if set) with SIMULATED_ENGINE_INSTANT=true, then sends requests at
concurrency 1 and 32 and prints p50/p95 latency and requests per second.

    .venv/bin/python bench/gateway.py [--requests 400] [--workers 1] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def setup_django(var_dir: Path) -> None:
    os.environ.setdefault("GPUCLOUD_VAR_DIR", str(var_dir))
    os.environ["SIMULATED_ENGINE_INSTANT"] = "true"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpucloud.settings")
    import django

    django.setup()


def prepare() -> str:
    """Migrate, seed the catalog, and return a fresh API key with a limit the benchmark can't hit."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts.services import api_key_create
    from deployments.services import demo_catalog_ensure

    call_command("migrate", interactive=False, verbosity=0)
    demo_catalog_ensure()
    user, _ = get_user_model().objects.get_or_create(username="bench")
    return api_key_create(user=user, name="bench", rpm=10_000_000)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_platform(port: int, workers: int) -> list[subprocess.Popen]:
    from django.conf import settings

    env = {**os.environ, "REDIS_URL": settings.REDIS_URL}
    manage = str(BASE_DIR / "manage.py")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                manage,
                "gpuworker",
                f"--name=bench-{i}@localhost",
                "--concurrency=32",
                "--loglevel=WARNING",
            ],
            env=env,
        )
        for i in range(workers)
    ]
    processes.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "-v",
                "0",
                "gpucloud.asgi:application",
            ],
            env=env,
        )
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return processes
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_platform(processes)
    raise SystemExit("The platform did not become healthy within 60s")


def stop_platform(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


async def run_load(url: str, key: str, total: int, concurrency: int, max_tokens: int) -> dict:
    body = {
        "model": "llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "Benchmark the gateway."}],
        "max_tokens": max_tokens,
    }
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:

        async def one_client() -> None:
            nonlocal errors
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        for _ in range(min(5, total)):  # warm up connections and the worker
            await client.post("/v1/chat/completions", json=body)
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started

    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
        "rps": len(latencies) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    setup_django(BASE_DIR / "var" / "bench")
    key = prepare()
    port = free_port()
    processes = start_platform(port, args.workers)
    try:
        print(
            f"gateway benchmark: {args.requests} non-streaming requests per level, instant simulated engine, "
            f"{args.workers} worker(s), max_tokens={args.max_tokens}, {os.cpu_count()} CPU cores"
        )
        print(f"{'concurrency':>11} {'ok':>6} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
        for concurrency in (1, 32):
            r = asyncio.run(run_load(f"http://127.0.0.1:{port}", key, args.requests, concurrency, args.max_tokens))
            figures = f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['rps']:>8.1f}"
            print(f"{r['concurrency']:>11} {r['requests']:>6} {r['errors']:>6} {figures}")
    finally:
        stop_platform(processes)
        if not os.environ.get("REDIS_URL"):
            from django.conf import settings

            from gpucloud import embedded_redis

            embedded_redis.stop(settings.EMBEDDED_REDIS_DIR)


if __name__ == "__main__":
    main()

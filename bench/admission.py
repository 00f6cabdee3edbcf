"""Benchmark billing admission: microseconds per reserve + settle at concurrency 1 and 32.

Runs in-process against the benchmarks' own SQLite database and embedded Redis (var/bench/, or
DATABASE_URL/REDIS_URL if set), without Daphne or workers:

- "reserve + release": billing.admission.admit then release (the Lua script round trips only);
- "reserve + settle": admit, then settle, which writes the usage record and the charge in one
  database transaction and frees the reservation (what a billed request costs the gateway).

    .venv/bin/python bench/admission.py [--requests 2000]
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports.
from __future__ import annotations

import os
import sys

_BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BASE_DIR)

import argparse
import statistics
import threading
import time
import uuid
from decimal import Decimal

from bench.harness import embedded_redis_running, exit_on_sigterm, setup_django


def _run(concurrency: int, requests: int, work) -> tuple[float, list[float]]:
    """Run ``work()`` ``requests`` times from ``concurrency`` threads; wall seconds and each call's µs."""
    timings: list[float] = []
    lock = threading.Lock()
    per_thread = requests // concurrency

    def loop():
        from django.db import connection

        mine = []
        for _ in range(per_thread):
            start = time.perf_counter()
            work()
            mine.append((time.perf_counter() - start) * 1e6)
        connection.close()
        with lock:
            timings.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    options = parser.parse_args()
    exit_on_sigterm()
    setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts.services import api_key_create
    from billing import admission, services
    from deployments.models import CatalogModel

    with embedded_redis_running():
        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}", password=uuid.uuid4().hex)
        services.credit_grant(user=user, amount=Decimal("1000000"))
        api_key, _ = api_key_create(user=user, name="bench", tpm=10**9, max_parallel=10**6)
        model, _ = CatalogModel.objects.get_or_create(
            model_id="bench-model",
            defaults={
                "family": "bench",
                "parameters_billion": Decimal("8"),
                "price_input_per_million": Decimal("0.10"),
                "price_output_per_million": Decimal("0.20"),
            },
        )

        def reserve_release():
            reservation = admission.admit(
                api_key, model, request_id=f"req_{uuid.uuid4().hex}", prompt_tokens=100, max_tokens=200
            )
            admission.release(reservation)

        def reserve_settle():
            reservation = admission.admit(
                api_key, model, request_id=f"req_{uuid.uuid4().hex}", prompt_tokens=100, max_tokens=200
            )
            admission.settle(
                reservation, prompt_tokens=100, completion_tokens=150, endpoint="chat.completions", status_code=200
            )

        reserve_release()  # loads the account's state
        print(f"{'operation':<20} {'c':>3} {'µs p50':>9} {'µs p95':>9} {'ops/s':>9}")
        for name, work in (("reserve + release", reserve_release), ("reserve + settle", reserve_settle)):
            for concurrency in (1, 32):
                requests = options.requests if name == "reserve + release" else options.requests // 4
                wall, timings = _run(concurrency, requests, work)
                timings.sort()
                p95 = timings[int(len(timings) * 0.95) - 1]
                print(
                    f"{name:<20} {concurrency:>3} {statistics.median(timings):>9.0f} {p95:>9.0f} "
                    f"{len(timings) / wall:>9.0f}"
                )
        call_command("reconcilebilling", verbosity=0)


if __name__ == "__main__":
    main()

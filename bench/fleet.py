"""Benchmark the GPU fleet: dispatch across workers, detecting dead workers, recovering their requests.

Each part starts its own private platform (bench/harness.py: Daphne, then GPU workers joined with a
join token; SQLite and an embedded Redis in var/bench/, or DATABASE_URL/REDIS_URL if set).

a. Dispatch: with 1, 2 and 4 workers (--slots each) and the instant engine, N non-streaming
   requests at a fixed concurrency (p50/p95 latency, req/s), then N streaming ones with a small
   max_tokens: "dispatch latency" is the time from sending a request to its first streamed text,
   at that concurrency and at concurrency 1.
b. Dead-worker detection: start a worker, wait until it is online, SIGKILL it, and time how long
   until GET /api/workers shows it offline and until /health no longer lists it (then the same for
   a hung worker, SIGSTOP, whose connection stays open).
c. Recovery: 2 workers on the paced engine; streaming requests with explicit seeds, SIGKILL the
   worker running most of them, and time from the kill until the last affected request completes.
   Every streamed text is compared with a non-streamed request with the same seed and temperature.

    .venv/bin/python bench/fleet.py [--parts abc] [--workers 1,2,4] [--slots 8] [--requests 400]
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports.
from __future__ import annotations

import os
import sys

_BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BASE_DIR)

import argparse
import asyncio
import itertools
import re
import signal
import statistics
import time
from dataclasses import dataclass

from bench.harness import Platform, Worker, embedded_redis_running, exit_on_sigterm, setup_django
from bench.load import Sample, chat, chat_body, chat_stream, client_for, run_load

FAST_MODEL = "llama-3.1-8b-instruct"
# The slowest demo deployment (72B on an H100 profile: about 15 tokens/s), so that requests are
# still running when their worker is killed.
SLOW_MODEL = "qwen2.5-72b-instruct"
POLL_INTERVAL = 0.02


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


# --- a. dispatch latency and throughput ------------------------------------------------------


def part_a(args) -> None:
    print(
        f"\na. Dispatch: instant engine, {args.requests} requests per figure, workers x {args.slots} slots; "
        f"non-streaming max_tokens={args.max_tokens}, streaming max_tokens={args.stream_max_tokens}"
    )
    c = args.concurrency
    print(f"{'':>7} | {f'non-streaming, concurrency {c}':^37} | {f'first token, c={c}':^17} | {'first token, c=1':^17}")
    print(
        f"{'workers':>7} | {'ok':>5} {'errors':>6} {'p50 ms':>7} {'p95 ms':>7} {'req/s':>7} | "
        f"{'p50 ms':>8} {'p95 ms':>8} | {'p50 ms':>8} {'p95 ms':>8}"
    )
    for count in args.workers:
        with Platform(workers=count, slots=args.slots, models=[FAST_MODEL], label=f"fleet-a{count}") as platform:
            platform.warm_up(FAST_MODEL)
            url, key = platform.url, platform.key
            body = chat_body(FAST_MODEL, "Benchmark the fleet.", args.max_tokens)
            stream_body = chat_body(FAST_MODEL, "Benchmark dispatch.", args.stream_max_tokens)
            whole = asyncio.run(run_load(url, key, body=body, total=args.requests, concurrency=c))
            loaded = asyncio.run(run_load(url, key, body=stream_body, total=args.requests, concurrency=c, stream=True))
            idle = asyncio.run(
                run_load(url, key, body=stream_body, total=args.idle_requests, concurrency=1, stream=True)
            )
        errors = whole.errors + loaded.errors + idle.errors
        print(
            f"{count:>7} | {len(whole.ok):>5} {whole.errors:>6} {whole.latency_ms(50):>7.1f} "
            f"{whole.latency_ms(95):>7.1f} {whole.rps:>7.1f} | "
            f"{loaded.first_token_ms(50):>8.1f} {loaded.first_token_ms(95):>8.1f} | "
            f"{idle.first_token_ms(50):>8.1f} {idle.first_token_ms(95):>8.1f}"
            + (
                f"   stream errors: {loaded.errors + idle.errors} ({loaded.error_kinds} {idle.error_kinds})"
                if errors - whole.errors
                else ""
            )
            + (f"   errors: {whole.error_kinds}" if whole.errors else ""),
            flush=True,
        )


# --- b. time to detect a dead worker ---------------------------------------------------------


@dataclass
class Detection:
    offline: float | None  # seconds from the signal until GET /api/workers no longer says online
    status: str
    unlisted: float | None  # seconds from the signal until /health no longer lists the node


def detect(platform: Platform, victim: Worker, sig: int, timeout: float) -> Detection:
    """Send ``sig`` to a ready worker; poll /api/workers and /health until both show it gone."""
    killed_at = time.perf_counter()
    victim.process.send_signal(sig)
    offline = unlisted = None
    status = "online"
    while (offline is None or unlisted is None) and time.perf_counter() - killed_at < timeout:
        if offline is None:
            node = platform.nodes().get(victim.node) or {}
            if node.get("status") not in ("online", "draining"):
                offline, status = time.perf_counter() - killed_at, node.get("status", "missing")
        if unlisted is None:
            _, health = platform.health()
            if victim.node not in health["checks"]["workers"].get("names", []):
                unlisted = time.perf_counter() - killed_at
        time.sleep(POLL_INTERVAL)
    return Detection(offline, status, unlisted)


def part_b(args) -> None:
    print(
        f"\nb. Dead-worker detection: {args.trials} trials per signal; a second worker keeps the platform healthy; "
        f"polling every {POLL_INTERVAL * 1000:.0f} ms (each figure is when the answer showing it arrived)"
    )
    print(f"{'signal':>8} {'trial':>5} | {'/api/workers offline ms':>23} {'status':>8} | {'/health unlisted ms':>19}")
    with Platform(workers=1, slots=args.slots, models=[FAST_MODEL], label="fleet-b") as platform:
        for sig in (signal.SIGKILL, signal.SIGSTOP):
            results = []
            for trial in range(1, args.trials + 1):
                victim = platform.start_worker(f"{platform.label}-{sig.name.lower()}{trial}")
                platform.wait_ready([victim])
                time.sleep(0.5)  # somewhere between two heartbeats, not right after the first one
                result = detect(platform, victim, sig, timeout=args.detect_timeout)
                platform.stop_worker(victim, signal.SIGKILL, timeout=10)  # a stopped process dies too
                results.append(result)
                print(
                    f"{sig.name:>8} {trial:>5} | {ms(result.offline):>23} {result.status:>8} | "
                    f"{ms(result.unlisted):>19}",
                    flush=True,
                )
            offline = [r.offline for r in results if r.offline is not None]
            unlisted = [r.unlisted for r in results if r.unlisted is not None]
            mean_offline = ms(statistics.fmean(offline)) if offline else "-"
            mean_unlisted = ms(statistics.fmean(unlisted)) if unlisted else "-"
            print(f"{sig.name:>8} {'mean':>5} | {mean_offline:>23} {'':>8} | {mean_unlisted:>19}")


# --- c. recovery from a dead worker ----------------------------------------------------------


def compare(streamed: str, reference: str) -> str:
    """The streamed text against the non-streamed one of the same seed."""
    if streamed == reference:
        return "identical"
    if len(streamed) > len(reference):
        repeated = streamed.endswith(reference) or streamed.startswith(reference)
        return "DUPLICATED" if repeated else "EXTRA TEXT"
    if reference.startswith(streamed):
        return "TRUNCATED"
    return "DIFFERENT"


def longest_gap_after(sample: Sample, moment: float) -> float | None:
    """The longest wait for text after ``moment`` (a request's stall, if its worker died then)."""
    times = [moment, *(t for t in sample.chunk_times if t > moment)]
    if sample.done_at > moment:
        times.append(sample.done_at)
    return max((b - a for a, b in itertools.pairwise(times)), default=None)


async def recovery_run(platform: Platform, bodies: list[dict], args) -> dict:
    samples = [Sample(False, 0.0) for _ in bodies]
    async with client_for(platform.url, platform.key, len(bodies), timeout=args.stream_timeout) as client:
        tasks = [asyncio.create_task(chat_stream(client, b, s)) for b, s in zip(bodies, samples, strict=True)]
        deadline = time.monotonic() + 30
        while any(not s.chunk_times for s in samples) and time.monotonic() < deadline:
            if all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        # Let a heartbeat report the requests in flight (every WORKER_HEARTBEAT_INTERVAL, 1s).
        await asyncio.sleep(args.kill_after)
        nodes = await asyncio.to_thread(platform.nodes)
        live = [w for w in platform.workers if w.alive]
        victim = max(live, key=lambda w: (nodes.get(w.node) or {}).get("in_flight", 0))
        in_flight = {w.node: (nodes.get(w.node) or {}).get("in_flight", 0) for w in live}
        log_offset = len(platform.daphne_log_text())
        running = [i for i, t in enumerate(tasks) if not t.done()]
        killed_at = time.perf_counter()
        victim.process.send_signal(signal.SIGKILL)
        _, pending = await asyncio.wait(tasks, timeout=args.recovery_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    victim.process.wait(timeout=10)
    await asyncio.sleep(0.5)  # let Daphne's log reach the file
    lost = set(re.findall(r"lost while serving (req_\w+)", platform.daphne_log_text()[log_offset:]))
    return {
        "samples": samples,
        "victim": victim,
        "in_flight": in_flight,
        "running": running,
        "killed_at": killed_at,
        "redispatched": lost,
        "pending": len(pending),
    }


def part_c(args) -> None:
    n = args.recovery_requests
    print(
        f"\nc. Recovery: paced engine ({SLOW_MODEL}, about 15 tokens/s), 2 workers x {args.slots} slots, "
        f"{n} streaming requests (max_tokens={args.recovery_max_tokens}, temperature 0.8, explicit seeds); "
        f"SIGKILL the worker with most requests in flight {args.kill_after:.1f}s after all have streamed text"
    )
    with Platform(workers=2, slots=args.slots, instant=False, models=[SLOW_MODEL], label="fleet-c") as platform:
        platform.warm_up(SLOW_MODEL)

        def body(seed: int, stream: bool) -> dict:
            return chat_body(
                SLOW_MODEL,
                "Tell me about GPU clouds.",
                args.recovery_max_tokens,
                seed=seed,
                temperature=0.8,
                stream=stream,
            )

        # References first: the non-streamed text of each seed. The longest ones become the
        # streaming requests, so that they are all still running when the worker is killed.
        async def references() -> list[Sample]:
            async with client_for(platform.url, platform.key, 2 * n, timeout=args.stream_timeout) as client:
                return await asyncio.gather(*(chat(client, body(seed, False)) for seed in range(1, 2 * n + 1)))

        refs = {seed: s for seed, s in enumerate(asyncio.run(references()), start=1) if s.ok}
        if len(refs) < n:
            raise SystemExit(f"Only {len(refs)} of {2 * n} reference requests succeeded")
        seeds = sorted(refs, key=lambda seed: len(refs[seed].text), reverse=True)[:n]
        run = asyncio.run(recovery_run(platform, [body(seed, True) for seed in seeds], args))

    samples: list[Sample] = run["samples"]
    killed_at = run["killed_at"]
    by_id = {s.request_id: i for i, s in enumerate(samples)}
    affected = sorted(by_id[r] for r in run["redispatched"] if r in by_id)
    print(
        f"killed {run['victim'].node}; requests in flight per /api/workers just before: {run['in_flight']}; "
        f"requests still running at the kill: {len(run['running'])} of {n}"
    )
    print(
        f"{'#':>2} {'seed':>4} {'chars':>5} {'redispatched':>12} {'longest stall ms':>16} {'done after kill ms':>18} "
        f"{'total ms':>8} {'non-streamed ms':>15} {'result':>6}  text vs non-streamed"
    )
    verdicts = []
    for i, (seed, sample) in enumerate(zip(seeds, samples, strict=True)):
        stall = longest_gap_after(sample, killed_at) if i in run["running"] else None
        done_after = sample.done_at - killed_at if sample.done_at > killed_at else None
        verdict = compare(sample.text, refs[seed].text)
        verdicts.append(verdict)
        print(
            f"{i:>2} {seed:>4} {len(sample.text):>5} {'yes' if i in affected else 'no':>12} {ms(stall):>16} "
            f"{ms(done_after):>18} {ms(sample.latency):>8} {ms(refs[seed].latency):>15} "
            f"{'ok' if sample.ok else sample.error:>6}  {verdict}"
        )
    ok = sum(s.ok for s in samples)
    finished = [samples[i].done_at - killed_at for i in affected if samples[i].ok]
    recovery = f"{max(finished):.2f}s" if finished and len(finished) == len(affected) else "not all recovered"
    # What the failure cost each affected request: its time against the same seed's undisturbed one.
    added = [samples[i].latency - refs[seeds[i]].latency for i in affected if samples[i].ok]
    stalls = [longest_gap_after(samples[i], killed_at) or 0.0 for i in affected]
    print(
        f"affected (dispatched again, per Daphne's log): {len(affected)}; "
        f"kill -> last affected request complete: {recovery}; "
        f"completed successfully: {ok}/{n}; "
        f"identical to the non-streamed text: {verdicts.count('identical')}/{n}; "
        f"with duplicated text: {verdicts.count('DUPLICATED') + verdicts.count('EXTRA TEXT')}"
        + (f"; still running at the time limit: {run['pending']}" if run["pending"] else "")
    )
    if added:
        print(
            f"affected requests: longest stall mean {ms(statistics.fmean(stalls))} ms, max {ms(max(stalls))} ms; "
            f"time added (total minus the non-streamed request of the same seed) "
            f"mean {ms(statistics.fmean(added))} ms, max {ms(max(added))} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="abc", help="which parts to run, e.g. 'a' or 'bc'")
    parser.add_argument("--workers", default="1,2,4", help="worker counts for part a")
    parser.add_argument("--slots", type=int, default=8, help="requests each worker runs at once")
    parser.add_argument("--requests", type=int, default=400, help="requests per figure in part a")
    parser.add_argument("--idle-requests", type=int, default=100, help="streaming requests at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stream-max-tokens", type=int, default=4)
    parser.add_argument("--trials", type=int, default=3, help="kills per signal in part b")
    parser.add_argument("--detect-timeout", type=float, default=30)
    parser.add_argument("--recovery-requests", type=int, default=8)
    parser.add_argument("--recovery-max-tokens", type=int, default=150)
    parser.add_argument("--kill-after", type=float, default=1.2, help="seconds after all streams have text")
    parser.add_argument("--recovery-timeout", type=float, default=120)
    parser.add_argument("--stream-timeout", type=float, default=90)
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]

    exit_on_sigterm()
    setup_django()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"fleet benchmark: {os.cpu_count()} CPU cores shared by the client, Daphne, the workers and Redis "
        f"(load average at start: {load})",
        flush=True,
    )
    with embedded_redis_running():
        if "a" in args.parts:
            part_a(args)
        if "b" in args.parts:
            part_b(args)
        if "c" in args.parts:
            part_c(args)


if __name__ == "__main__":
    main()

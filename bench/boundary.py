"""Benchmark the trust boundary: nodes on the socket protocol against the path before it, side by side.

"after" is this checkout: GPU nodes are ``python -m gpunode`` processes that speak only the node
protocol over their WebSocket, and a dispatcher in the web process takes jobs from the Celery
queues for them. "before" is commit aaa52c1 (the last commit before the boundary), checked out
with ``git worktree add --detach /tmp/gpucloud-before aaa52c1`` if it is not there yet: its GPU
workers are Celery workers (``manage.py gpuworker``) that talk to Redis directly.

Each checkout gets a platform of its own, started by that checkout's bench/harness.py in a helper
process (the current .venv python, cwd = the checkout): Daphne and one node/worker (32 slots)
serving llama-3.1-8b-instruct (A100 profile), its own var dir (``var/bench-boundary/<side>`` of
this checkout: a fresh SQLite database and its own embedded Redis; DATABASE_URL and REDIS_URL are
ignored so that both sides run alike). Both platforms stay up for the whole run and are measured
in turn (before, after, before, after, …) with the same requests, so that the noise of a shared
machine falls on both alike:

1. instant engine (SIMULATED_ENGINE_INSTANT=true on the node): non-streaming chat, max_tokens=16,
   p50/p95 latency at concurrency 1, then requests per second (and p50) at concurrency 32;
2. paced engine (A100 profile, about 96 tokens/s per choice): 256-token streams, time to first
   token and tokens per second, one at a time and 16 at once. The simulated engine ends a choice
   naturally after 12 to about 110 tokens, so a single choice cannot reach 256 tokens: each stream
   asks for n=4 choices of max_tokens=64, with seeds for which all four choices run past 64
   tokens, i.e. 256 completion tokens per stream (checked against the usage chunk).

Tokens per second is completion tokens over the stream's whole time (request sent → [DONE]);
"aggregate" is all streams' completion tokens over the wall time of the batch.

    .venv/bin/python bench/boundary.py [--rounds 3] [--c1-requests 150] [--c32-requests 640] [--streams 10]
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports.
from __future__ import annotations

import os
import sys

_BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BASE_DIR)

import argparse
import asyncio
import json
import math
import selectors
import shutil
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.load import Sample, chat_body, percentile, run_load

BASE_DIR = Path(_BASE_DIR)
BEFORE_COMMIT = "aaa52c1"
BEFORE_DIR = Path("/tmp/gpucloud-before")
VAR_ROOT = BASE_DIR / "var" / "bench-boundary"
SIDES = ("before", "after")
MODEL = "llama-3.1-8b-instruct"
SLOTS = 32
STREAM_CHOICES, STREAM_MAX_TOKENS = 4, 64  # 4 x 64 = 256 completion tokens per stream
STREAM_PROMPT = "Write a long answer about GPU clouds."
READY = "BOUNDARY-READY "
# What the helper must not inherit: each side gets its own SQLite database and embedded Redis.
DROPPED_VARIABLES = ("DATABASE_URL", "REDIS_URL", "GPUCLOUD_VAR_DIR", "DJANGO_SETTINGS_MODULE")

# Run in each checkout (cwd = the checkout, so its own bench/, gpucloud/… are imported) by the
# current .venv python: its harness starts the platform, on the var dir given; commands on stdin.
HELPER = r"""
import json, sys
from pathlib import Path

import bench.harness as harness

var_dir, side, model, slots = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
harness.VAR_DIR = var_dir
harness.LOG_DIR = var_dir / "logs"
harness.exit_on_sigterm()
harness.setup_django()
platform = None
try:
    with harness.embedded_redis_running():
        for line in sys.stdin:
            command = line.split()
            if platform is not None:
                platform.close()
                platform = None
            if not command or command[0] != "start":
                break
            platform = harness.Platform(
                workers=1, slots=slots, instant=command[1] == "instant", models=[model], label=f"boundary-{side}"
            )
            platform.__enter__()
            platform.warm_up(model)
            node = platform.workers[0]
            print("__READY__" + json.dumps({"url": platform.url, "key": platform.key, "node_log": str(node.log)}),
                  flush=True)
finally:
    if platform is not None:
        platform.close()
""".replace("__READY__", READY)


# --- the two platforms -----------------------------------------------------------------------


def ensure_before_checkout() -> None:
    """The old checkout at /tmp/gpucloud-before (a detached worktree of this repository)."""
    if not BEFORE_DIR.exists():
        print(f"creating the worktree {BEFORE_DIR} at {BEFORE_COMMIT}", flush=True)
        subprocess.run(
            ["git", "-C", str(BASE_DIR), "worktree", "add", "--detach", str(BEFORE_DIR), BEFORE_COMMIT],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    head = subprocess.run(
        ["git", "-C", str(BEFORE_DIR), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    expected = subprocess.run(
        ["git", "-C", str(BASE_DIR), "rev-parse", f"{BEFORE_COMMIT}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if head != expected:
        raise SystemExit(f"{BEFORE_DIR} is at {head[:7]}, not {BEFORE_COMMIT}: remove it (git worktree remove).")


@dataclass
class Side:
    """One checkout's platform, run by a helper process with that checkout's harness."""

    name: str
    checkout: Path
    billing: bool = False
    process: subprocess.Popen | None = None
    url: str = ""
    key: str = ""
    node_log: str = ""
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.var_dir = VAR_ROOT / self.name
        self.stderr_path = VAR_ROOT / f"{self.name}-helper.log"

    def launch(self) -> None:
        shutil.rmtree(self.var_dir / "logs", ignore_errors=True)
        self.var_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in DROPPED_VARIABLES}
        env["PYTHONUNBUFFERED"] = "1"
        env["BILLING_ENABLED"] = "true" if self.billing else "false"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", HELPER, str(self.var_dir), self.name, MODEL, str(SLOTS)],
            cwd=self.checkout,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # a Ctrl-C reaches only us; we stop it in order
        )

    def send(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def redispatched(self) -> int:
        """Requests Daphne dispatched again because it judged their node lost (both checkouts log this)."""
        logs = (self.var_dir / "logs").glob("*-daphne.log")
        return sum(log.read_text(errors="replace").count("lost while serving") for log in logs)

    def stop(self, timeout: float = 60) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # the helper closes its platform and Redis, then exits
            except OSError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        self._stderr.close()
        self.process = None


def start_platforms(sides: list[Side], mode: str, timeout: float = 180) -> None:
    """Ask every helper for a platform in ``mode`` (instant or paced), at once; wait for all."""
    for side in sides:
        side.send(f"start {mode}")
    waiting = {side.process.stdout: side for side in sides}
    with selectors.DefaultSelector() as selector:
        for stream in waiting:
            selector.register(stream, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise SystemExit(f"Timed out waiting for the {mode} platforms of {[s.name for s in waiting.values()]}")
            for key, _ in selector.select(timeout=1):
                side = waiting[key.fileobj]
                line = key.fileobj.readline()
                if not line:
                    raise SystemExit(f"The {side.name} platform did not start; see {side.stderr_path}")
                if line.startswith(READY):
                    info = json.loads(line[len(READY) :])
                    side.url, side.key, side.node_log = info["url"], info["key"], info["node_log"]
                    selector.unregister(key.fileobj)
                    del waiting[key.fileobj]


# --- measurements ----------------------------------------------------------------------------


def stream_seeds(count: int) -> list[int]:
    """Seeds for which all STREAM_CHOICES choices of the simulated engine run to STREAM_MAX_TOKENS."""
    from gpunode.engines.simulated import MAX_LENGTH, MIN_LENGTH, _rng
    from nodeprotocol import GenerationJob

    seeds = []
    for seed in range(1, 100_000):
        job = GenerationJob(
            request_id="", model=MODEL, parameters_billion=1, gpu_profile="", prompt=f"user: {STREAM_PROMPT}",
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
    first_token: float = math.nan  # seconds
    total: float = math.nan
    tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.total if self.total else math.nan


async def stream_256(client: httpx.AsyncClient, seed: int) -> Stream:
    body = chat_body(
        MODEL,
        STREAM_PROMPT,
        STREAM_MAX_TOKENS,
        n=STREAM_CHOICES,
        seed=seed,
        temperature=1.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    result = Stream()
    started = time.perf_counter()
    done = False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = f"stream {chunk['error'].get('code')}"
                    continue
                if math.isnan(result.first_token) and any(
                    c.get("delta", {}).get("content") for c in chunk.get("choices", [])
                ):
                    result.first_token = time.perf_counter() - started
                if chunk.get("usage"):
                    result.tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as error:
        result.error = type(error).__name__
    result.total = time.perf_counter() - started
    result.ok = done and not result.error and not math.isnan(result.first_token)
    if not done and not result.error:
        result.error = "no [DONE]"
    return result


async def stream_batch(side: Side, seeds: list[int], concurrency: int) -> tuple[list[Stream], float]:
    """Every seed's stream, ``concurrency`` at a time; returns the streams and the wall time."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    headers = {"Authorization": f"Bearer {side.key}"}
    async with httpx.AsyncClient(
        base_url=side.url, headers=headers, timeout=120, limits=limits, trust_env=False
    ) as client:
        await stream_256(client, seeds[0])  # warm the connection; not counted
        queue = list(seeds)
        results: list[Stream] = []

        async def one_client() -> None:
            while queue:
                results.append(await stream_256(client, queue.pop()))

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return results, time.perf_counter() - started


@dataclass
class Figures:
    """Everything measured for one side, over all rounds."""

    c1: list[Sample] = field(default_factory=list)
    c32: list[Sample] = field(default_factory=list)
    c32_seconds: float = 0.0
    streams1: list[Stream] = field(default_factory=list)
    streams16: list[Stream] = field(default_factory=list)
    streams16_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    redispatched: int = 0  # "lost while serving" in Daphne's logs: the node was alive all along

    def note_errors(self, samples) -> None:
        self.errors += [s.error for s in samples if not s.ok]


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def rows(f: Figures) -> list[tuple[str, float, bool]]:
    """(label, value, higher is better) for the table."""
    c1 = [s.latency for s in f.c1 if s.ok]
    c32 = [s.latency for s in f.c32 if s.ok]
    s1 = [s for s in f.streams1 if s.ok]
    s16 = [s for s in f.streams16 if s.ok]
    return [
        ("c=1 non-streaming p50 ms", ms(c1, 50), False),
        ("c=1 non-streaming p95 ms", ms(c1, 95), False),
        ("c=32 requests/s", len(c32) / f.c32_seconds if f.c32_seconds else math.nan, True),
        ("c=32 p50 ms", ms(c32, 50), False),
        ("256-tok stream c=1 TTFT p50 ms", ms([s.first_token for s in s1], 50), False),
        ("256-tok stream c=1 tokens/s p50", median([s.tokens_per_second for s in s1]), True),
        ("256-tok stream c=16 TTFT p50 ms", ms([s.first_token for s in s16], 50), False),
        ("256-tok stream c=16 tokens/s p50", median([s.tokens_per_second for s in s16]), True),
        (
            "256-tok stream c=16 aggregate tok/s",
            sum(s.tokens for s in s16) / f.streams16_seconds if f.streams16_seconds else math.nan,
            True,
        ),
    ]


def print_table(figures: dict[str, Figures], args) -> None:
    before, after = rows(figures["before"]), rows(figures["after"])
    print(
        f"\nboundary benchmark: {args.rounds} interleaved rounds per figure; 1 node x {SLOTS} slots, {MODEL}; "
        f"{os.cpu_count()} CPU cores shared by client, Daphne, node and Redis"
    )
    print(f"{'':<36} {'before':>10} {'after':>10} {'change':>8}")
    for (label, old, higher), (_, new, _) in zip(before, after, strict=True):
        change = (new - old) / old * 100 if old and not math.isnan(old) and not math.isnan(new) else math.nan
        worse = (change < 0) if higher else (change > 0)
        mark = "" if math.isnan(change) or abs(change) < 0.05 else (" worse" if worse else " better")
        print(f"{label:<36} {old:>10.1f} {new:>10.1f} {change:>+7.1f}%{mark}")
    for name, f in figures.items():
        requests = len(f.c1) + len(f.c32) + len(f.streams1) + len(f.streams16)
        tokens = sorted({s.tokens for s in f.streams1 + f.streams16 if s.ok})
        errors = ", ".join(f"{e} x{f.errors.count(e)}" for e in sorted(set(f.errors))) or "none"
        print(
            f"{name}: {requests} requests measured, errors: {errors}; completion tokens per stream: {tokens}; "
            f"dispatched again after their node was declared lost (Daphne's log): {f.redispatched}"
        )
    rps_old, rps_new = before[2][1], after[2][1]
    print(f"throughput change at c=32 (requests/s): {(rps_new - rps_old) / rps_old * 100:+.1f}%")


def measure_instant(side: Side, f: Figures, args) -> None:
    body = chat_body(MODEL, "Benchmark the boundary.", 16)
    c1 = asyncio.run(run_load(side.url, side.key, body=body, total=args.c1_requests, concurrency=1))
    c32 = asyncio.run(run_load(side.url, side.key, body=body, total=args.c32_requests, concurrency=32))
    f.c1 += c1.samples
    f.c32 += c32.samples
    f.c32_seconds += c32.elapsed
    f.note_errors(c1.samples + c32.samples)
    print(
        f"  {side.name:<6} c=1 p50 {c1.latency_ms(50):6.1f} ms | c=32 {c32.rps:6.1f} req/s"
        + (f" | errors {c1.error_kinds} {c32.error_kinds}" if c1.errors or c32.errors else ""),
        flush=True,
    )


def measure_paced(side: Side, f: Figures, seeds: list[int], args) -> None:
    one, _ = asyncio.run(stream_batch(side, seeds[: args.streams], 1))
    many, seconds = asyncio.run(stream_batch(side, seeds[: args.concurrent_streams], 16))
    f.streams1 += one
    f.streams16 += many
    f.streams16_seconds += seconds
    f.errors += [s.error for s in one + many if not s.ok]
    ok1 = [s for s in one if s.ok]
    print(
        f"  {side.name:<6} c=1 TTFT p50 {ms([s.first_token for s in ok1], 50):6.1f} ms, "
        f"{median([s.tokens_per_second for s in ok1]):6.1f} tok/s | c=16 "
        f"{sum(s.tokens for s in many if s.ok) / seconds:7.1f} tok/s aggregate",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="before/after rounds per phase")
    parser.add_argument("--c1-requests", type=int, default=150, help="per side and round")
    parser.add_argument("--c32-requests", type=int, default=640, help="per side and round")
    parser.add_argument("--streams", type=int, default=10, help="256-token streams at c=1, per side and round")
    parser.add_argument("--concurrent-streams", type=int, default=48, help="streams at c=16, per side and round")
    parser.add_argument(
        "--with-billing",
        action="store_true",
        help="keep billing (admission and charges) on the after side; off by default, so the figures "
        "compare the node protocol path alone with the path before it, which had no billing",
    )
    args = parser.parse_args()

    started = time.monotonic()
    ensure_before_checkout()
    VAR_ROOT.mkdir(parents=True, exist_ok=True)
    seeds = stream_seeds(max(args.streams, args.concurrent_streams))
    sides = [Side("before", BEFORE_DIR), Side("after", BASE_DIR, billing=args.with_billing)]
    figures = {side.name: Figures() for side in sides}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    billing = "on" if args.with_billing else "off"
    print(
        f"boundary benchmark: before = {BEFORE_COMMIT} ({BEFORE_DIR}), after = {BASE_DIR} (billing {billing}); "
        f"load average {load}"
    )
    try:
        for side in sides:
            side.launch()
        print("starting both platforms (instant engine)…", flush=True)
        start_platforms(sides, "instant")
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}: instant engine", flush=True)
            for side in sides:
                measure_instant(side, figures[side.name], args)
        print("restarting both platforms (paced engine)…", flush=True)
        start_platforms(sides, "paced")
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}: paced engine, 256-token streams", flush=True)
            for side in sides:
                measure_paced(side, figures[side.name], seeds, args)
    finally:
        for side in sides:
            side.stop()
            figures[side.name].redispatched = side.redispatched()
    print_table(figures, args)
    print(f"(total {time.monotonic() - started:.0f} s; logs in {VAR_ROOT})")


if __name__ == "__main__":
    main()

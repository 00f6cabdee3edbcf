"""Recovery figures: Redis goes away under live streams and comes back; how long until the platform serves?

Starts a private platform (Daphne launched as everywhere, ``python -m gpucloud.daphne``, and one GPU
node on the paced simulated engine) with an embedded Redis of its own in ``var/bench-recovery/redis``
(REDIS_URL is ignored), then, for each outage (3 s and 60 s by default, one after the other on the
same platform, which must be ready again between them):

1. starts ``--streams`` streamed chat requests on the slowest demo model (qwen2.5-72b-instruct),
   with seeds whose replies run long, and waits until every one has received its first chunk;
2. stops Redis (``SHUTDOWN NOSAVE``: its append-only file stays), waits out the outage, starts it;
3. from the moment Redis answers again, measures in parallel the time to ``/health`` 200 and the
   time to the first successful (non-streamed) chat request;
4. reads what became of the streams: completed (``[DONE]``, no error event), ended with an error
   event and ``[DONE]``, cut (the connection ended without ``[DONE]``), another HTTP status, or hung
   (still open when the bound runs out: must be 0), and the usage record each one left.

Every wait is bounded (``--bound`` seconds after Redis's return).

    .venv/bin/python bench/recovery.py [--outages 3,60] [--streams 10] [--bound 180]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import harness

MODEL = "qwen2.5-72b-instruct"
MESSAGES = [{"role": "user", "content": "Keep talking through the outage."}]


def long_seeds(count: int, min_tokens: int = 90) -> list[int]:
    """Seeds for which the simulated engine's reply to MESSAGES runs to at least ``min_tokens``."""
    from gpunode.engines.simulated import MAX_LENGTH, MIN_LENGTH, _rng
    from nodeprotocol import GenerationJob

    prompt = "\n".join(f"{m['role']}: {m['content']}" for m in MESSAGES)
    seeds = []
    for seed in range(1, 100_000):
        job = GenerationJob(
            request_id="", model=MODEL, parameters_billion=1, gpu_profile="", prompt=prompt,
            prompt_tokens=0, max_tokens=0, seed=seed,
        )  # fmt: skip
        if _rng(job, 0).randint(MIN_LENGTH, MAX_LENGTH) >= min(min_tokens, MAX_LENGTH) - 5:
            seeds.append(seed)
            if len(seeds) == count:
                return seeds
    raise RuntimeError("no long seeds")


@dataclass
class Stream:
    seed: int
    status: int | None = None
    request_id: str = ""
    lines: list[str] = field(default_factory=list)
    error: str = ""
    started: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None
    response: httpx.Response | None = None

    def outcome(self) -> str:
        if self.ended_at is None:
            return "hung"
        if self.status != 200:
            return f"HTTP {self.status}" if self.status else f"no response ({self.error[:60]})"
        done = bool(self.lines) and self.lines[-1] == "data: [DONE]"
        errored = any(line.startswith("data: ") and '"error"' in line for line in self.lines)
        if done and not errored:
            return "completed"
        if done:
            return "error event + [DONE]"
        return f"cut without [DONE] ({self.error[:60] or 'closed'})"


def run_stream(url: str, key: str, stream: Stream, read_timeout: float) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "seed": stream.seed, "max_tokens": 200}
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(10, read=read_timeout),
            trust_env=False,
        ) as response:
            stream.response = response
            stream.status = response.status_code
            stream.request_id = response.headers.get("x-request-id", "")
            for line in response.iter_lines():
                if line:
                    stream.lines.append(line)
                    stream.started.set()
    except (httpx.HTTPError, RuntimeError) as error:  # RuntimeError: closed by the bound below
        stream.error = repr(error)
    stream.ended_at = time.monotonic()
    stream.started.set()


def first_time(condition, start: float, bound: float, interval: float = 0.1) -> float | None:
    """Seconds from ``start`` until ``condition()`` is first true, or None within ``bound``."""
    while time.monotonic() - start < bound:
        try:
            if condition():
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    return None


def outage(platform: harness.Platform, seconds: float, streams_count: int, bound: float) -> dict:
    from django.conf import settings

    from gpucloud import embedded_redis
    from inference.models import UsageRecord

    url, key = platform.url, platform.key
    streams = [Stream(seed) for seed in long_seeds(streams_count)]
    threads = [threading.Thread(target=run_stream, args=(url, key, s, bound + seconds), daemon=True) for s in streams]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for stream in streams:
        stream.started.wait(timeout=max(deadline - time.monotonic(), 0.1))
    began = sum(bool(s.lines) for s in streams)
    running = sum(s.ended_at is None for s in streams)

    embedded_redis.stop(settings.EMBEDDED_REDIS_DIR)
    stopped_at = time.monotonic()
    health_during = Counter()
    while time.monotonic() - stopped_at < seconds:
        try:
            health_during[httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code] += 1
        except httpx.HTTPError as error:
            health_during[type(error).__name__] += 1
        time.sleep(min(1.0, max(seconds - (time.monotonic() - stopped_at), 0)))
    embedded_redis.ensure_running(settings.EMBEDDED_REDIS_DIR)
    back = time.monotonic()

    figures: dict = {}

    def healthy() -> bool:
        return httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200

    def served() -> bool:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Are you back?"}], "max_tokens": 4}
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            trust_env=False,
        )
        return response.status_code == 200

    probes = [
        threading.Thread(target=lambda: figures.__setitem__("health", first_time(healthy, back, bound))),
        threading.Thread(target=lambda: figures.__setitem__("served", first_time(served, back, bound, 0.25))),
    ]
    for probe in probes:
        probe.start()
    for thread in threads:
        thread.join(timeout=max(back + bound - time.monotonic(), 0.1))
    for probe in probes:
        probe.join(timeout=max(back + bound + 35 - time.monotonic(), 0.1))
    outcomes = Counter(s.outcome() for s in streams)
    for stream in streams:  # what still hangs is closed, so the next run starts clean
        if stream.ended_at is None and stream.response is not None:
            stream.response.close()

    # The usage record of each stream, with its status (written when the request ends).
    ids = [s.request_id for s in streams if s.request_id]
    records: dict[str, UsageRecord] = {}
    wait_until = time.monotonic() + 15
    while len(records) < len(ids) and time.monotonic() < wait_until:
        records = {r.request_id: r for r in UsageRecord.objects.filter(request_id__in=ids)}
        time.sleep(0.5)
    usage = Counter(
        f"{records[s.request_id].status_code}" if s.request_id in records else "none" for s in streams if s.request_id
    )
    tokens = [records[s.request_id].completion_tokens for s in streams if s.request_id in records]
    return {
        "outage": seconds,
        "streams": len(streams),
        "began": began,
        "running_at_stop": running,
        "health_during": dict(health_during),
        "health": figures.get("health"),
        "served": figures.get("served"),
        "outcomes": dict(outcomes),
        "usage": dict(usage),
        "tokens": tokens,
        # When each stream ended, from Redis stopping (negative: before it stopped).
        "ended": sorted(s.ended_at - stopped_at for s in streams if s.ended_at is not None),
    }


def show(result: dict, bound: float) -> None:
    def secs(value):
        return f"{value:.1f} s" if value is not None else f"not within {bound:.0f} s"

    print(f"\nRedis stopped for {result['outage']:.0f} s under {result['streams']} streams", end="")
    print(f" ({result['began']} had output, {result['running_at_stop']} still running when it stopped)")
    print(f"  /health during the outage:                     {result['health_during']}")
    print(f"  Redis back -> /health 200:                     {secs(result['health'])}")
    print(f"  Redis back -> first successful chat request:   {secs(result['served'])}")
    print(
        "  Streams in flight:                             "
        + ", ".join(f"{k}: {v}" for k, v in result["outcomes"].items())
    )
    if result["ended"]:
        first, last = result["ended"][0], result["ended"][-1]
        print(f"  Streams ended, after Redis stopped:            {first:.1f} s to {last:.1f} s")
    print(f"  Hung:                                          {result['outcomes'].get('hung', 0)}")
    print(
        "  Their usage records (status):                  " + ", ".join(f"{k}: {v}" for k, v in result["usage"].items())
    )
    if result["tokens"]:
        print(f"  Completion tokens metered per stream:          {sorted(result['tokens'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outages", default="3,60", help="outage lengths in seconds, comma-separated")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--bound", type=float, default=180, help="seconds after Redis's return to wait for anything")
    options = parser.parse_args()
    outages = [float(value) for value in options.outages.split(",")]

    harness.VAR_DIR = harness.BASE_DIR / "var" / "bench-recovery"
    harness.LOG_DIR = harness.VAR_DIR / "logs"
    harness.exit_on_sigterm()
    harness.setup_django()
    from django.conf import settings

    if not settings.USE_EMBEDDED_REDIS:
        sys.exit("bench/recovery.py stops and starts its own embedded Redis: unset REDIS_URL.")

    results = []
    with harness.embedded_redis_running():
        platform = harness.Platform(workers=1, slots=32, instant=False, label="recovery")
        with platform:
            from accounts.models import ApiKey
            from billing import services
            from deployments.models import Replica

            key = ApiKey.objects.get(name=platform.label)
            services.credit_grant(user=key.user, amount=Decimal("100000"))
            platform.warm_up(MODEL)
            placed = sorted(Replica.objects.values_list("deployment_id", "node_id"))
            for seconds in outages:
                print(f"Outage of {seconds:.0f} s ...", flush=True)
                results.append(outage(platform, seconds, options.streams, options.bound))
                show(results[-1], options.bound)
                same = sorted(Replica.objects.values_list("deployment_id", "node_id")) == placed
                print(f"  Replicas where they were before:               {'yes' if same else 'NO'}")
                results[-1]["placed"] = same
                try:
                    platform.wait_ready(platform.workers, timeout=options.bound)
                except harness.PlatformError as error:
                    print(f"  Not ready again: {error}")
                    break
            alive = platform.daphne.poll() is None and all(w.alive for w in platform.workers)
            print(f"\nDaphne and the node still running: {'yes' if alive else 'NO'}")
    ok = alive and all(
        r["outcomes"].get("hung", 0) == 0 and r["health"] is not None and r["served"] is not None for r in results
    )
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

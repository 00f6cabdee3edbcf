"""Many concurrent streams on one web process: do they all end with [DONE], and what does it cost?

Starts a private platform (one Daphne process, GPU nodes on the paced simulated engine), opens
``--streams`` streaming ``/v1/chat/completions`` requests (default 2,000) spread over ``--ramp``
seconds from ``--clients`` client processes (raw asyncio sockets, so the client stays light), and
keeps every one open at once: the model is a slow one made for the run (``--model-billion``
parameters: about 2 tokens/s on the simulated A100), and each request's seed is picked so its reply
runs to ``--max-tokens`` (~35 s). It reports how many streams completed (``[DONE]``, no error
event, a usage chunk), the errors by kind, the most streams open at once, the peak resident memory
(VmHWM/VmRSS), threads and CPU time of the Daphne process, the usage records written, and the
duration. It passes (exit 0, "OK") with every stream complete, no error and peak RSS at most
``--max-rss-mb`` (400). Run it on a quiet machine: it needs both cores for minutes.

    .venv/bin/python bench/streams.py                      # 2,000 streams, 4 nodes x 520 slots
    .venv/bin/python bench/streams.py --streams 300 --nodes 1

The run is bounded: every stream gives up after ``--stream-timeout`` seconds and the whole run
after ``--time-limit``. Its data lives in ``var/bench-streams/`` (not the other benchmarks').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness

MODEL = "bench-slow-400b"
PROMPT = "Write a long story about GPUs."


# --- the client: raw HTTP/1.1 over asyncio, one connection per stream -------------------------


async def one_stream(host: str, port: int, key: str, body: bytes, limit: float) -> dict:
    """One streamed request; returns its outcome (times are time.time(), comparable across processes)."""
    result = {"start": time.time(), "open": None, "end": None, "error": "", "done": False, "usage": False, "chunks": 0}
    writer = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\n"
                + f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n".encode()
                + b"Content-Type: application/json\r\nAccept: text/event-stream\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            headers = head.lower()
            if status != 200:
                rest = await reader.read()
                code = ""
                try:
                    code = json.loads(rest[rest.index(b"{") :])["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    pass
                result["error"] = f"HTTP {status} {code}".strip()
                return result
            result["open"] = time.time()
            chunked = b"transfer-encoding: chunked" in headers
            pending = b""
            while True:
                if chunked:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        break
                    data = await reader.readexactly(size + 2)
                    data = data[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        break
                pending += data
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data: "):
                        continue
                    payload = event[6:]
                    if payload == b"[DONE]":
                        result["done"] = True
                    elif payload.startswith(b'{"error"'):
                        try:
                            result["error"] = "stream " + json.loads(payload)["error"].get("code", "")
                        except (ValueError, KeyError, TypeError, AttributeError):
                            result["error"] = "stream error"
                    elif b'"choices": [], "usage": {' in payload:
                        result["usage"] = True
                    else:
                        result["chunks"] += 1
                if result["done"]:
                    break
            if not result["error"]:
                if not result["done"]:
                    result["error"] = "ended without [DONE]"
                elif not result["usage"]:
                    result["error"] = "no usage chunk"
    except TimeoutError:
        result["error"] = result["error"] or ("timeout (open)" if result["open"] else "timeout (waiting)")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as error:
        result["error"] = result["error"] or f"{type(error).__name__}"
    finally:
        result["end"] = time.time()
        if writer is not None:
            writer.close()
    return result


async def client_main(options) -> None:
    """A client process: streams ``options.offset``, ``+clients``, ... of ``options.streams``."""
    host, port = options.url.removeprefix("http://").split(":")
    seeds = json.loads(options.seeds)
    keys = json.loads(options.keys)
    mine = list(range(options.offset, options.streams, options.clients))
    start_at = options.start_at

    async def launch(index: int) -> dict:
        await asyncio.sleep(max(0.0, start_at + index * options.ramp / options.streams - time.time()))
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": options.max_tokens,
            "seed": seeds[index % len(seeds)],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        key = keys[index % len(keys)]
        return await one_stream(host, int(port), key, json.dumps(body).encode(), options.stream_timeout)

    results = await asyncio.gather(*(launch(i) for i in mine))
    json.dump(results, sys.stdout)


# --- the benchmark -------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Samples a process's resident memory and CPU time every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.hwm_kb = self.start_rss_kb = 0
        self.peak_threads = 0
        self.cpu_seconds = 0.0
        self.stopped = threading.Event()

    def sample(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss = int(fields["VmRSS"].split()[0])
        self.start_rss_kb = self.start_rss_kb or rss
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.hwm_kb = int(fields["VmHWM"].split()[0])
        self.peak_threads = max(self.peak_threads, int(fields["Threads"]))
        self.cpu_seconds = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()


def long_seeds(count: int, min_tokens: int) -> list[int]:
    """Seeds whose simulated reply to PROMPT runs to at least ``min_tokens`` tokens."""
    from gpunode.engines.simulated import MIN_LENGTH, _rng
    from nodeprotocol import GenerationJob

    seeds = []
    for seed in range(1, 1_000_000):
        job = GenerationJob(
            request_id="", model=MODEL, parameters_billion=1, gpu_profile="", prompt=f"user: {PROMPT}",
            prompt_tokens=0, max_tokens=0, seed=seed,
        )  # fmt: skip
        if _rng(job, 0).randint(MIN_LENGTH, 96) >= min_tokens:
            seeds.append(seed)
            if len(seeds) == count:
                return seeds
    raise RuntimeError("no long seeds")


def slow_model(billion: int) -> None:
    """The benchmark's model: a big one, so the simulated engine paces it slowly."""
    from deployments.models import CatalogModel, Deployment, Engine, Precision
    from deployments.services import deployment_create

    model, _ = CatalogModel.objects.get_or_create(
        model_id=MODEL,
        defaults={
            "family": "bench",
            "parameters_billion": Decimal(billion),
            "context_length": 8192,
            "price_input_per_million": Decimal("0.10"),
            "price_output_per_million": Decimal("0.10"),
            "memory_gb": {"fp16": 60.0, "int8": 60.0, "int4": 60.0},
        },
    )
    if not Deployment.objects.filter(model=model).exists():
        deployment_create(model=model, name=MODEL, engine=Engine.SIMULATED, precision=Precision.INT4)


def tenants(count: int) -> list[str]:
    """``count`` accounts with credit, one key each: one account may have only so many requests
    in flight (ACCOUNT_MAX_IN_FLIGHT), so thousands of streams come from many tenants, as they would."""
    from django.contrib.auth import get_user_model

    from accounts.models import ApiKey
    from accounts.services import api_key_create
    from billing import services

    keys = []
    for i in range(count):
        user, _ = get_user_model().objects.get_or_create(username=f"streams-tenant-{i}")
        services.credit_grant(user=user, amount=Decimal("1000"))
        keys.append(api_key_create(user=user, name=f"streams-{i}", rpm=ApiKey.RPM_MAX, granted_by_staff=True)[1])
    return keys


def run_clients(platform, options, seeds: list[int], keys: list[str]) -> tuple[list[dict], float]:
    start_at = time.time() + 2
    command = [sys.executable, __file__, "--client", f"--url={platform.url}", f"--keys={json.dumps(keys)}"]
    shared = [
        f"--streams={options.streams}",
        f"--clients={options.clients}",
        f"--ramp={options.ramp}",
        f"--max-tokens={options.max_tokens}",
        f"--stream-timeout={options.stream_timeout}",
        f"--start-at={start_at}",
        f"--seeds={json.dumps(seeds)}",
    ]
    processes = [
        subprocess.Popen([*command, *shared, f"--offset={k}"], stdout=subprocess.PIPE, cwd=harness.BASE_DIR)
        for k in range(options.clients)
    ]
    results: list[dict] = []
    for process in processes:
        out, _ = process.communicate(timeout=options.time_limit)
        results.extend(json.loads(out or b"[]"))
    return results, start_at


def peak_open(results: list[dict]) -> int:
    edges = sorted([(r["open"], 1) for r in results if r["open"]] + [(r["end"], -1) for r in results if r["open"]])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def report(options, results: list[dict], start_at: float, sampler: Sampler, usage: Counter) -> bool:
    completed = [r for r in results if r["done"] and not r["error"]]
    errors = Counter(r["error"] for r in results if r["error"] or not r["done"])
    ends = [r["end"] for r in results]
    durations = sorted(r["end"] - r["open"] for r in completed)
    waits = sorted(r["open"] - r["start"] for r in completed)
    rss_mb = max(sampler.peak_rss_kb, sampler.hwm_kb) / 1024
    fleet = f"{options.nodes} nodes x {options.slots} slots"
    print(f"streams            {len(results)} (ramp {options.ramp:.0f}s, {fleet})")
    print(f"completed          {len(completed)}")
    print(f"errors             {sum(errors.values())}" + "".join(f"\n  {n:6d}  {kind}" for kind, n in errors.items()))
    print(f"most open at once  {peak_open(results)}")
    print(f"duration           {max(ends) - start_at:.1f}s (first request to last end)")
    if durations:
        mid = len(durations) // 2
        print(f"stream open        median {durations[mid]:.1f}s, max {durations[-1]:.1f}s")
        print(f"time to headers    median {waits[mid]:.2f}s, max {waits[-1]:.2f}s")
    print(f"web RSS            start {sampler.start_rss_kb / 1024:.0f} MB, peak {rss_mb:.0f} MB")
    print(f"web threads        peak {sampler.peak_threads}")
    print(f"web CPU            {sampler.cpu_seconds:.0f}s")
    print(f"usage records      {dict(usage)}")
    return len(completed) == len(results) and not errors and rss_mb <= options.max_rss_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--slots", type=int, default=0, help="per node (default: streams / nodes + 4%%)")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--ramp", type=float, default=25.0, help="seconds over which the streams start")
    parser.add_argument("--max-tokens", type=int, default=70)
    parser.add_argument("--model-billion", type=int, default=400, help="~2 tokens/s on the simulated A100")
    parser.add_argument("--stream-timeout", type=float, default=360.0)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--max-rss-mb", type=float, default=400.0)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--per-account", type=int, default=50, help="streams per account (ACCOUNT_MAX_IN_FLIGHT)")
    for name in ("url", "keys", "seeds"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    options = parser.parse_args()
    # Thousands of sockets: in this process, the client processes and Daphne, which inherit it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    if options.client:
        asyncio.run(client_main(options))
        return 0
    options.slots = options.slots or -(-options.streams * 104 // 100 // options.nodes)

    harness.VAR_DIR = harness.BASE_DIR / "var" / "bench-streams"
    harness.LOG_DIR = harness.VAR_DIR / "logs"
    harness.exit_on_sigterm()
    harness.setup_django()
    from django.core.management import call_command

    from billing import services
    from inference.models import UsageRecord

    seeds = long_seeds(200, options.max_tokens)
    with harness.embedded_redis_running():
        call_command("migrate", interactive=False, verbosity=0)
        slow_model(options.model_billion)
        platform = harness.Platform(
            workers=options.nodes,
            slots=options.slots,
            instant=False,
            models=[MODEL],
            label="streams",
            # A queue wait of up to two minutes: with one core for the web process, the last of
            # 2,000 streams starting within 25 s waited up to a minute for a node (the report's
            # "time to headers"; see ARCHITECTURE.md, Load). Fewer malloc arenas: each of the web
            # process's threads (WEB_SYNC_THREADS, the loop's executor) may get one, and arenas of
            # freed SQLite caches are tens of MB of RSS.
            env={"INFERENCE_QUEUE_TIMEOUT": "120", "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")},
        )
        with platform:
            from accounts.models import ApiKey

            keys = tenants(-(-options.streams // options.per_account))
            services.credit_grant(user=ApiKey.objects.get(name=platform.label).user, amount=Decimal("1000"))
            platform.warm_up(MODEL)
            sampler = Sampler(platform.daphne.pid)
            sampler.sample()
            sampler.start()
            print(f"Daphne pid {platform.daphne.pid}; {options.streams} streams from {options.clients} clients ...")
            results, start_at = run_clients(platform, options, seeds, keys)
            sampler.stopped.set()
            sampler.sample()
            time.sleep(1)
            usage = Counter(
                UsageRecord.objects.filter(api_key__name__startswith="streams-", stream=True).values_list(
                    "status_code", flat=True
                )
            )
        ok = report(options, results, start_at, sampler, usage)
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark what the "openai" engine adds: the same requests straight to an upstream server and
through a GPU Cloud deployment that forwards to it, side by side.

Starts a private platform (bench/harness.py) whose simulated node serves llama-3.1-8b-instruct:
that platform's own /v1 is the upstream. On the same platform it creates a second model,
``llama-via-openai``, deployed with the "openai" engine pointing at that /v1, and starts a second
node with ``--engine openai`` to serve it. A request to ``llama-via-openai`` therefore makes the
whole trip twice (gateway → openai node → upstream gateway → simulated node), so the
difference between the two columns is the cost of one extra hop through the platform plus the
engine's forwarding.

Requests alternate between the two paths, one at a time (then a few at once), with the same body
(temperature 0, so both return the same text). For each path: non-streaming latency p50/p95;
streaming time to first token p50/p95, total time p50 and decode speed (completion tokens per
second after the first token). Run once with the simulated engine instant (the pure overhead)
and once paced like an A100 (what a client would notice).

    .venv/bin/python bench/openai_overhead.py [--requests 40] [--max-tokens 64] [--pacing both]
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports.
from __future__ import annotations

import os
import sys

_BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BASE_DIR)

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field

import httpx

from bench.harness import (
    Platform,
    PlatformError,
    embedded_redis_running,
    exit_on_sigterm,
    setup_django,
)

UPSTREAM_MODEL = "llama-3.1-8b-instruct"
VIA_MODEL = "llama-via-openai"
VIA_DEPLOYMENT = "llama-via-openai"
# The upstream's API key stays on the openai node: the deployment names this variable
# (engine_config.api_key_env), which that node's operator allows in GPUCLOUD_ENGINE_ENV_ALLOW.
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_API_KEY"
PROMPT = [{"role": "user", "content": "Explain in a few sentences how a GPU cloud serves a model."}]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class PathStats:
    latency_ms: list[float] = field(default_factory=list)  # non-streaming, whole request
    ttft_ms: list[float] = field(default_factory=list)  # streaming, first content chunk
    stream_ms: list[float] = field(default_factory=list)  # streaming, until [DONE]
    decode_tps: list[float] = field(default_factory=list)  # completion tokens / (total - ttft)
    errors: list[str] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)


def non_streaming(client: httpx.Client, model: str, max_tokens: int, stats: PathStats) -> None:
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        stats.errors.append(f"HTTP {response.status_code}: {response.text[:160]}")
        return
    stats.latency_ms.append(elapsed)
    stats.texts.add(response.json()["choices"][0]["message"]["content"])


def streaming(client: httpx.Client, model: str, max_tokens: int, stats: PathStats) -> None:
    body = {
        "model": model,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            stats.errors.append(f"HTTP {response.status_code}: {response.text[:160]}")
            return
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                stats.errors.append(f"error event: {chunk['error'].get('message', '')[:160]}")
                return
            if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    done = time.perf_counter()
    if first is None:
        stats.errors.append("no content")
        return
    stats.ttft_ms.append((first - started) * 1000)
    stats.stream_ms.append((done - started) * 1000)
    if done > first and tokens > 1:
        stats.decode_tps.append((tokens - 1) / (done - first))


def setup_openai_deployment(platform: Platform) -> None:
    """The llama-via-openai model, deployed with the openai engine on the platform's own /v1."""
    from deployments.models import CatalogModel, Deployment
    from deployments.services import deployment_create

    upstream = CatalogModel.objects.get(model_id=UPSTREAM_MODEL)
    model, _ = CatalogModel.objects.get_or_create(
        model_id=VIA_MODEL,
        defaults={
            "family": upstream.family,
            "parameters_billion": upstream.parameters_billion,
            "context_length": upstream.context_length,
            "default_engine": "openai",
        },
    )
    config = {"base_url": f"{platform.url}/v1", "api_key_env": UPSTREAM_KEY_ENV, "model": UPSTREAM_MODEL}
    Deployment.objects.filter(name=VIA_DEPLOYMENT).delete()
    deployment_create(name=VIA_DEPLOYMENT, model=model, engine="openai", engine_config=config)


def start_openai_worker(platform: Platform) -> None:
    """A node that joins with ``--engine openai`` (the harness starts simulated ones), holding the
    upstream's API key in its own environment."""
    env = {UPSTREAM_KEY_ENV: platform.key, "GPUCLOUD_ENGINE_ENV_ALLOW": UPSTREAM_KEY_ENV}
    worker = platform.start_worker(f"{platform.label}-openai", None, "--engine=openai", env=env)
    log = worker.log
    queue = f"deployment.{VIA_DEPLOYMENT}"

    def serving() -> bool:
        if not worker.alive:
            raise PlatformError(f"The openai worker exited; see {log}")
        node = platform.node_of(worker, platform.nodes())
        return node is not None and queue in node["queues"]

    platform._wait(serving, 60, f"the openai worker to serve {queue}")


def run(args, instant: bool) -> None:
    label = "instant" if instant else "paced (A100 profile)"
    with Platform(workers=1, slots=16, instant=instant, models=[UPSTREAM_MODEL], label="openai-overhead") as platform:
        setup_openai_deployment(platform)
        start_openai_worker(platform)
        platform.warm_up(UPSTREAM_MODEL)
        platform.warm_up(VIA_MODEL)
        headers = {"Authorization": f"Bearer {platform.key}"}
        paths = {"direct": PathStats(), "via openai engine": PathStats()}
        models = {"direct": UPSTREAM_MODEL, "via openai engine": VIA_MODEL}
        with httpx.Client(base_url=platform.url, headers=headers, timeout=120, trust_env=False) as client:
            for _ in range(args.requests):
                for name, stats in paths.items():
                    non_streaming(client, models[name], args.max_tokens, stats)
                for name, stats in paths.items():
                    streaming(client, models[name], args.max_tokens, stats)
        print(
            f"\n== simulated engine {label}: {args.requests} requests per path and mode, max_tokens={args.max_tokens}"
        )
        print(
            f"{'path':<18} {'ok':>4} {'err':>4} {'p50 ms':>8} {'p95 ms':>8} | {'TTFT p50':>9} {'TTFT p95':>9} "
            f"{'stream p50':>10} {'tok/s p50':>9}"
        )
        for name, s in paths.items():
            ok = len(s.latency_ms) + len(s.ttft_ms)
            print(
                f"{name:<18} {ok:>4} {len(s.errors):>4} {percentile(s.latency_ms, 50):>8.1f} "
                f"{percentile(s.latency_ms, 95):>8.1f} | {percentile(s.ttft_ms, 50):>9.1f} "
                f"{percentile(s.ttft_ms, 95):>9.1f} {percentile(s.stream_ms, 50):>10.1f} "
                f"{statistics.median(s.decode_tps) if s.decode_tps else float('nan'):>9.0f}"
            )
            for error in sorted(set(s.errors))[:3]:
                print(f"    error: {error}")
        direct, via = paths["direct"], paths["via openai engine"]
        extra_latency = percentile(via.latency_ms, 50) - percentile(direct.latency_ms, 50)
        extra_ttft = percentile(via.ttft_ms, 50) - percentile(direct.ttft_ms, 50)
        print(
            f"overhead (p50): non-streaming +{extra_latency:.1f} ms, TTFT +{extra_ttft:.1f} ms; "
            f"same text on both paths: {direct.texts == via.texts}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="requests per path and mode")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--pacing", choices=("instant", "paced", "both"), default="both")
    args = parser.parse_args()
    exit_on_sigterm()
    setup_django()
    print(
        f"openai engine overhead: one platform is both the upstream and the gateway; {os.cpu_count()} CPU cores "
        "shared by the client, Daphne, both workers and Redis"
    )
    with embedded_redis_running():
        if args.pacing in ("instant", "both"):
            run(args, instant=True)
        if args.pacing in ("paced", "both"):
            run(args, instant=False)


if __name__ == "__main__":
    main()

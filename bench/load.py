"""Load for the benchmarks: chat requests over httpx (streamed or not), run at a fixed concurrency."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class Sample:
    """One request: ``latency`` to the end of the response, ``first_token`` to the first streamed text."""

    ok: bool
    latency: float
    first_token: float | None = None
    error: str = ""
    text: str = ""
    request_id: str = ""
    started_at: float = 0.0  # time.perf_counter() values
    done_at: float = 0.0
    chunk_times: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def chat_body(model: str, content: str, max_tokens: int, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


def _error_of(response: httpx.Response) -> str:
    try:
        return f"{response.status_code} {response.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}"


async def chat(client: httpx.AsyncClient, body: dict) -> Sample:
    """A non-streaming chat completion."""
    started = time.perf_counter()
    try:
        response = await client.post("/v1/chat/completions", json={**body, "stream": False})
    except httpx.HTTPError as error:
        now = time.perf_counter()
        return Sample(False, now - started, error=type(error).__name__, started_at=started, done_at=now)
    now = time.perf_counter()
    sample = Sample(
        response.status_code == 200,
        now - started,
        request_id=response.headers.get("x-request-id", ""),
        started_at=started,
        done_at=now,
    )
    if sample.ok:
        sample.text = response.json()["choices"][0]["message"]["content"]
    else:
        sample.error = _error_of(response)
    return sample


async def chat_stream(client: httpx.AsyncClient, body: dict, sample: Sample | None = None) -> Sample:
    """A streaming chat completion: records the time of the first text and of every text chunk.

    Pass ``sample`` to watch the request while it runs (``chunk_times`` grows as text arrives).
    """
    started = time.perf_counter()
    sample = sample or Sample(False, 0.0)
    sample.started_at = started
    texts: list[str] = []
    done = False
    try:
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            sample.request_id = response.headers.get("x-request-id", "")
            if response.status_code != 200:
                await response.aread()
                sample.error = _error_of(response)
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line.removeprefix("data: ")
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:  # an error after the stream began
                        sample.error = f"stream {chunk['error'].get('code')}"
                        continue
                    for choice in chunk.get("choices", []):
                        content = choice.get("delta", {}).get("content")
                        if content:
                            now = time.perf_counter()
                            if sample.first_token is None:
                                sample.first_token = now - started
                            sample.chunk_times.append(now)
                            texts.append(content)
    except httpx.HTTPError as error:
        sample.error = sample.error or type(error).__name__
    sample.done_at = time.perf_counter()
    sample.latency = sample.done_at - started
    sample.text = "".join(texts)
    sample.ok = done and not sample.error
    if not done and not sample.error:
        sample.error = "stream ended without [DONE]"
    return sample


@dataclass
class LoadResult:
    concurrency: int
    samples: list[Sample]
    elapsed: float

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def errors(self) -> int:
        return len(self.samples) - len(self.ok)

    @property
    def error_kinds(self) -> str:
        return ", ".join(f"{kind} x{n}" for kind, n in Counter(s.error for s in self.samples if not s.ok).items())

    def latency_ms(self, q: float) -> float:
        return percentile([s.latency for s in self.ok], q) * 1000

    def first_token_ms(self, q: float) -> float:
        return percentile([s.first_token for s in self.ok if s.first_token is not None], q) * 1000

    @property
    def rps(self) -> float:
        return len(self.ok) / self.elapsed if self.elapsed else math.nan

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(s.latency for s in self.ok) * 1000 if self.ok else math.nan


def client_for(url: str, key: str, concurrency: int, timeout: float = 60) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
        limits=limits,
        trust_env=False,  # 127.0.0.1 only: never through a proxy from the environment
    )


async def run_load(
    url: str,
    key: str,
    *,
    body: dict,
    total: int,
    concurrency: int,
    stream: bool = False,
    warmup: int = 5,
    time_limit: float = 600,
) -> LoadResult:
    """Send ``total`` requests from ``concurrency`` clients (each sends its next when the last is
    answered), after ``warmup`` sequential ones that are not counted. Stops taking new requests
    after ``time_limit`` seconds."""
    send = chat_stream if stream else chat
    samples: list[Sample] = []
    remaining = total
    async with client_for(url, key, concurrency) as client:
        for _ in range(warmup):
            await send(client, body)
        deadline = time.monotonic() + time_limit

        async def one_client() -> None:
            nonlocal remaining
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                samples.append(await send(client, body))

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(concurrency, samples, elapsed)

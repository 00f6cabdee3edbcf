"""Hundreds of streams at once on one web process: every one ends with [DONE], none with an error.

The small version of bench/streams.py (2,000 streams): 300 paced streams from several accounts
(one account may have only ACCOUNT_MAX_IN_FLIGHT requests in flight) on one node with 400 slots.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from conftest import long_seeds
from inference.models import UsageRecord

pytestmark = pytest.mark.live

MODEL = "qwen2.5-72b-instruct"  # ~15 tokens/s on the simulated H100: a stream lasts a few seconds
STREAMS = 300
ACCOUNTS = 10
MAX_TOKENS = 40
MESSAGES = [{"role": "user", "content": "Tell me about GPUs, at length."}]


async def _stream(client: httpx.AsyncClient, key: str, seed: int, delay: float) -> dict:
    await asyncio.sleep(delay)
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": MAX_TOKENS,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    outcome = {"status": 0, "done": False, "errors": [], "usage": None, "text": "", "request_id": "", "open": None}
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response:
            outcome["status"] = response.status_code
            outcome["request_id"] = response.headers.get("x-request-id", "")
            outcome["open"] = time.monotonic()
            if response.status_code != 200:
                outcome["errors"].append((await response.aread()).decode()[:300])
                return outcome
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    outcome["done"] = True
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    outcome["errors"].append(chunk["error"])
                elif chunk.get("usage"):
                    outcome["usage"] = chunk["usage"]
                else:
                    outcome["text"] += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    except httpx.HTTPError as error:
        outcome["errors"].append(repr(error))
    outcome["end"] = time.monotonic()
    return outcome


def _most_open(outcomes: list[dict]) -> int:
    edges = sorted([(o["open"], 1) for o in outcomes if o["open"]] + [(o["end"], -1) for o in outcomes if o["open"]])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


async def _many(url: str, keys: list[str], seeds: list[int]) -> list[dict]:
    limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, trust_env=False) as client:
        # Spread over two seconds, so that they are all open together.
        return await asyncio.gather(
            *(_stream(client, keys[i % len(keys)], seeds[i % len(seeds)], i * 2.0 / STREAMS) for i in range(STREAMS))
        )


def _threads_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


class _ThreadCount(threading.Thread):
    """The most threads a process ran while it was sampled."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.most, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            self.most = max(self.most, _threads_of(self.pid))


def test_hundreds_of_concurrent_streams_all_complete(fleet, make_key):
    fleet.start_worker("many", "--slots=400")
    fleet.wait_serving("many")
    users = [get_user_model().objects.create_user(f"many-{i}-{uuid.uuid4().hex[:6]}") for i in range(ACCOUNTS)]
    keys = [make_key(user, name="many streams", rpm=600)[1] for user in users]
    seeds = long_seeds(MODEL, MESSAGES, 20, min_tokens=MAX_TOKENS + 5)

    threads = _ThreadCount(fleet.daphne.pid)
    threads.start()
    outcomes = asyncio.run(_many(fleet.url, keys, seeds))
    threads.stopped.set()

    failed = [o for o in outcomes if o["status"] != 200 or not o["done"] or o["errors"] or not o["usage"]]
    assert not failed, f"{len(failed)} of {STREAMS} streams failed, e.g. {failed[:3]}"
    assert all(o["usage"]["completion_tokens"] == MAX_TOKENS for o in outcomes)
    assert _most_open(outcomes) >= STREAMS // 2  # they were open together, not one after another
    # No thread per stream (gpucloud.request_threads): the request threads, the loop's default
    # executor and a few of Daphne's own, whatever the number of streams.
    most = settings.WEB_SYNC_THREADS + 20
    assert threads.most <= most, f"the web process ran {threads.most} threads for {STREAMS} streams"
    records = UsageRecord.objects.filter(request_id__in=[o["request_id"] for o in outcomes])
    assert records.count() == STREAMS
    assert set(records.values_list("status_code", flat=True)) == {200}
    assert set(records.values_list("completion_tokens", flat=True)) == {MAX_TOKENS}

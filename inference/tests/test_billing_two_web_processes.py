"""Admission is exact across processes: 200 concurrent requests through two web processes, on the
same database and Redis, against a balance that covers exactly 50 of them (issue 9, item 6)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model

from billing import services
from billing.models import LedgerEntry
from billing.selectors import balance_of, price_in_force, request_cost
from conftest import BASE_DIR, _free_port, _healthy, wait_for
from deployments.models import CatalogModel
from gpucloud.daphne import command as daphne_command
from inference.models import UsageRecord
from nodeprotocol.tokens import count_chat_tokens

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"  # the fastest demo model
MESSAGES = [{"role": "user", "content": "Count to three."}]
MAX_TOKENS = 1  # every reply is longer: each served request costs exactly its worst case
REQUESTS = 200
AFFORDABLE = 50


@pytest.fixture
def second_web_process(live):
    """Another Daphne on the live platform's database and Redis. The GPU node stays connected to
    the first one: jobs admitted here reach it through the queue, their answers come back through
    the channel layer."""
    port = _free_port()
    process = subprocess.Popen(daphne_command("127.0.0.1", port), env=live.env, cwd=BASE_DIR)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), timeout=30, message="the second web process")
        yield url
    finally:
        live.stop(process)


@pytest.fixture
def customer(live, settings):
    """A new user whose only credit is what the test grants."""
    settings.SIGNUP_CREDIT_USD = "0"
    return get_user_model().objects.create_user(f"racer-{uuid.uuid4().hex[:8]}", password="a long password here")


def _warm_up(live, urls: list[str], make_key) -> None:
    """One request through each process, on another account: a process's first request loads what
    the next ones reuse (code, price versions), so that neither process starts the race late."""
    _, key = make_key(live.user, name="warm-up")
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    for url in urls:
        response = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert response.status_code == 200, response.text


async def _fire(urls: list[str], key: str) -> list[tuple[str, httpx.Response]]:
    """REQUESTS non-streamed completions at once, split evenly across ``urls``."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0}
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    clients = {url: httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) for url in urls}
    start = asyncio.Event()

    async def one(url: str) -> tuple[str, httpx.Response]:
        await start.wait()
        return url, await clients[url].post("/v1/chat/completions", json=body)

    try:
        tasks = [asyncio.create_task(one(urls[n % len(urls)])) for n in range(REQUESTS)]
        await asyncio.sleep(0)  # every task is waiting at the line
        start.set()
        return await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(client.aclose() for client in clients.values()))


def test_a_balance_for_50_requests_serves_exactly_50_of_200_across_two_web_processes(
    live, second_web_process, customer, make_key
):
    _, key = make_key(customer, rpm=600)  # the most a non-staff key may have: RPM is not the limit here
    model = CatalogModel.objects.get(model_id=MODEL)
    prompt_tokens = count_chat_tokens(MESSAGES)
    worst = request_cost(price_in_force(model), prompt_tokens, MAX_TOKENS)
    assert worst > 0
    assert balance_of(customer) == 0
    services.credit_grant(user=customer, amount=AFFORDABLE * worst, note="exactly 50 requests")

    urls = [live.url, second_web_process]
    _warm_up(live, urls, make_key)
    results = asyncio.run(_fire(urls, key))

    outcomes = Counter()
    for _, response in results:
        payload = response.json()
        if response.status_code == 200:
            outcomes["served"] += 1
            assert payload["usage"]["prompt_tokens"] == prompt_tokens
            assert payload["usage"]["completion_tokens"] == MAX_TOKENS
            assert Decimal(response.headers["x-request-cost"]) == worst
        else:
            error = payload["error"]
            outcomes[(response.status_code, error["code"])] += 1
            # Refused for the balance, not for a parallel or rate limit.
            assert error["type"] == "insufficient_quota" and "credit balance" in error["message"], error
    assert outcomes == {"served": AFFORDABLE, (429, "insufficient_quota"): REQUESTS - AFFORDABLE}
    assert Counter(url for url, _ in results) == {live.url: REQUESTS // 2, second_web_process: REQUESTS // 2}

    # Every request was metered once; exactly the served ones were charged, each at its worst case.
    records = UsageRecord.objects.filter(user=customer)
    assert Counter(records.values_list("status_code", flat=True)) == {200: AFFORDABLE, 429: REQUESTS - AFFORDABLE}
    assert records.values("request_id").distinct().count() == REQUESTS
    entries = LedgerEntry.objects.filter(account=customer)
    grants = sum((e.amount for e in entries.filter(kind=LedgerEntry.Kind.GRANT)), Decimal("0"))
    charges = [-e.amount for e in entries.filter(kind=LedgerEntry.Kind.CHARGE)]
    assert len(charges) == AFFORDABLE and set(charges) == {worst}
    assert entries.count() == 1 + AFFORDABLE  # the grant and the charges, nothing else
    assert balance_of(customer) == grants - sum(charges) == 0
    assert sum(records.values_list("cost", flat=True), Decimal("0")) == sum(charges)
    result = subprocess.run(
        [sys.executable, "manage.py", "reconcilebilling"], env=live.env, cwd=BASE_DIR, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("Balances and charges agree with the ledger.")

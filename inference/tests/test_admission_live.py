"""Money on the request path, end to end: the official OpenAI SDK against a live Daphne and a
real GPU worker process, with admission, settlement and the ledger in the live database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import Counter
from decimal import Decimal

import httpx
import openai
import pytest
from django.contrib.auth import get_user_model

from billing import services
from billing.models import LedgerEntry
from billing.selectors import balance_of, price_in_force, request_cost
from conftest import BASE_DIR, long_seeds, wait_for
from deployments.models import CatalogModel
from inference.models import UsageRecord
from nodeprotocol.tokens import count_chat_tokens, count_tokens

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"
# The slowest demo model (~15 tokens/s on its simulated H100): a stream lasts long enough to leave.
SLOW_MODEL = "qwen2.5-72b-instruct"
HELLO = [{"role": "user", "content": "Say hello to the GPU cloud."}]


@pytest.fixture
def customer(live, settings):
    """A new user with no credit (the test grants what it needs)."""
    settings.SIGNUP_CREDIT_USD = "0"
    return get_user_model().objects.create_user(f"payer-{uuid.uuid4().hex[:8]}", password="a long password here")


def _sdk(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=30)


def _ledger_agrees(live, user) -> None:
    """The balance is the grants less the charges, and manage.py reconcilebilling finds no difference."""
    entries = LedgerEntry.objects.filter(account=user)
    grants = sum((e.amount for e in entries.filter(kind=LedgerEntry.Kind.GRANT)), Decimal("0"))
    charges = sum((-e.amount for e in entries.filter(kind=LedgerEntry.Kind.CHARGE)), Decimal("0"))
    assert balance_of(user) == grants - charges
    charged = sum(UsageRecord.objects.filter(user=user).values_list("cost", flat=True), Decimal("0"))
    assert charged == charges
    result = subprocess.run(
        [sys.executable, "manage.py", "reconcilebilling"], env=live.env, cwd=BASE_DIR, capture_output=True
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_cost_is_in_the_usage_and_the_header(live, customer, make_key):
    services.credit_grant(user=customer, amount=Decimal("1.00"))
    _, key = make_key(customer, rpm=600, tpm=100_000)
    client = _sdk(live, key)

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    completion = raw.parse()

    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert record.cost == request_cost(record.price_version, completion.usage.prompt_tokens, 12) > 0
    assert Decimal(raw.headers["x-request-cost"]) == record.cost
    assert completion.usage.model_extra["cost"] == float(record.cost)
    assert LedgerEntry.objects.get(idempotency_key=f"charge:{record.request_id}").amount == -record.cost
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100_000
    assert raw.headers["x-ratelimit-limit-requests"] == "600"

    streamed = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(streamed.parse())
    assert "x-request-cost" not in streamed.headers  # not known when the headers leave
    assert streamed.headers["x-ratelimit-limit-tokens"] == "100000"
    usage = chunks[-1].usage
    streamed_record = UsageRecord.objects.get(request_id=streamed.headers["x-request-id"])
    assert usage.model_extra["cost"] == float(streamed_record.cost) == float(record.cost)
    _ledger_agrees(live, customer)


def test_a_balance_for_five_requests_serves_exactly_five_of_twenty(live, customer, make_key):
    _, key = make_key(customer, rpm=600)
    messages = [{"role": "user", "content": "Count to three."}]
    # Replies run 12+ tokens, so max_tokens 8 is always used up: each request costs its worst case.
    worst = request_cost(price_in_force(CatalogModel.objects.get(model_id=MODEL)), count_chat_tokens(messages), 8)
    services.credit_grant(user=customer, amount=5 * worst)

    async def one(client):
        try:
            return await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
        except openai.APIStatusError as error:
            return error

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=30) as client:
            return await asyncio.gather(*(one(client) for _ in range(20)))

    results = asyncio.run(main())

    outcomes = Counter("served" if hasattr(r, "choices") else (r.status_code, r.code) for r in results)
    assert outcomes == {"served": 5, (429, "insufficient_quota"): 15}
    served = [r for r in results if hasattr(r, "choices")]
    assert all(r.usage.completion_tokens == 8 and r.usage.model_extra["cost"] == float(worst) for r in served)
    assert balance_of(customer) == 0
    records = UsageRecord.objects.filter(user=customer)
    assert Counter(records.values_list("status_code", flat=True)) == {200: 5, 429: 15}
    assert LedgerEntry.objects.filter(account=customer, kind=LedgerEntry.Kind.CHARGE).count() == 5
    _ledger_agrees(live, customer)


def test_a_client_that_leaves_mid_stream_pays_only_for_what_it_received(live, customer, make_key):
    services.credit_grant(user=customer, amount=Decimal("1.00"))
    _, key = make_key(customer, rpm=600)
    messages = [{"role": "user", "content": "Tell me about GPUs."}]
    seed = long_seeds(SLOW_MODEL, messages, count=1, min_tokens=100)[0]
    body = {"model": SLOW_MODEL, "messages": messages, "seed": seed, "max_tokens": 100, "stream": True}

    text = ""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
            if count_tokens(text) >= 10:
                break  # leaving the block closes the connection
    received = count_tokens(text)

    record = wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).first(), timeout=10, message="usage")
    assert (record.status_code, record.error_code) == (499, "client_closed_request")
    # What was sent: what the client read, and at most what was on its way when it left.
    assert received <= record.completion_tokens <= received + 10, (received, record.completion_tokens)
    assert record.cost == request_cost(record.price_version, record.prompt_tokens, record.completion_tokens) > 0
    assert LedgerEntry.objects.get(idempotency_key=f"charge:{request_id}").amount == -record.cost
    # The worker stopped: nothing in flight on it any more.
    wait_for(lambda: live.node("main").telemetry.get("in_flight", 0) == 0, timeout=10, message="the job to stop")
    _ledger_agrees(live, customer)

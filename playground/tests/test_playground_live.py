"""The playground's endpoint against a live platform: a browser's session streams a reply from a
real GPU node process, and the request is metered and charged under the user's playground key,
exactly like a call to /v1/chat/completions."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from billing.models import LedgerEntry
from inference.models import UsageRecord
from playground.services import PLAYGROUND_KEY_NAME

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"


def _session(live) -> tuple[httpx.Client, str]:
    """An HTTP client logged in through the form, and the CSRF token the playground page gives its script."""
    client = httpx.Client(base_url=live.url, timeout=30)
    client.get("/login/")
    login = client.post(
        "/login/",
        data={"username": live.user.username, "password": "live user password"},
        headers={"X-CSRFToken": client.cookies["csrftoken"]},
    )
    assert login.status_code == 302
    page = client.get("/playground/")
    assert page.status_code == 200
    token = page.text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    return client, token


def _events(response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line.removeprefix("data: ")))
    return events


def test_a_session_streams_a_reply_that_is_metered_and_charged_under_the_playground_key(live):
    client, token = _session(live)
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}],
        "max_tokens": 20,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    with client.stream(
        "POST", "/playground/chat/completions", json=body, headers={"X-CSRFToken": token, "Referer": live.url}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        events = _events(response)

    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    usage = events[-1]["usage"]
    assert text
    assert usage["completion_tokens"] > 0 and Decimal(str(usage["cost"])) > 0
    record = UsageRecord.objects.select_related("api_key").get(request_id=request_id)
    assert (record.user_id, record.api_key.name, record.stream, record.status_code) == (
        live.user.pk,
        PLAYGROUND_KEY_NAME,
        True,
        200,
    )
    assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.cost == Decimal(str(usage["cost"]))
    charge = LedgerEntry.objects.get(kind=LedgerEntry.Kind.CHARGE, idempotency_key=f"charge:{request_id}")
    assert charge.amount == -record.cost


def test_a_request_without_the_csrf_token_is_refused_and_not_metered(live):
    client, _ = _session(live)
    before = UsageRecord.objects.count()

    response = client.post(
        "/playground/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Referer": live.url},
    )

    assert response.status_code == 403
    assert UsageRecord.objects.count() == before

"""The Usage page's CSV export: every request the filters select (not only a page), streamed, the
user's own only, with the key's name."""

import csv
import io
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from inference.models import UsageRecord

pytestmark = pytest.mark.django_db

URL = reverse("dashboard:usage-csv")


def _record(api_key, model="llama-3.1-8b-instruct", **fields) -> UsageRecord:
    values = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "user": api_key.user,
        "api_key": api_key,
        "endpoint": "chat.completions",
        "model": model,
        "status_code": 200,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "latency_ms": 350,
        "cost": Decimal("0.00000500"),
        **fields,
    }
    return UsageRecord.objects.create(**values)


def _rows(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_it_requires_login(client):
    response = client.get(URL)

    assert response.status_code == 302


def test_it_exports_every_filtered_request(client, user, make_key):
    api_key, _ = make_key(user, name="batch jobs")
    for _ in range(120):
        _record(api_key, model="mistral-7b-instruct-v0.3")
    _record(api_key, model="llama-3.1-8b-instruct")
    old = _record(api_key, model="mistral-7b-instruct-v0.3")
    UsageRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    client.force_login(user)

    response = client.get(URL, {"model": "mistral-7b-instruct-v0.3", "days": "7"})

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="usage.csv"' in response["Content-Disposition"]
    rows = _rows(response)
    assert len(rows) == 120
    assert {row["model"] for row in rows} == {"mistral-7b-instruct-v0.3"}
    assert rows[0]["key_name"] == "batch jobs"
    assert rows[0]["key"] == api_key.display_prefix
    assert rows[0]["cost_usd"] == "0.00000500"
    assert rows[0]["time_to_first_token_ms"] == ""


def test_it_rejects_outsider(client, user, outsider, make_key):
    mine, _ = make_key(user)
    theirs, _ = make_key(outsider, name="mallory")
    _record(mine)
    _record(theirs, worker="mallory-worker")
    client.force_login(user)

    rows = _rows(client.get(URL, {"days": ""}))

    assert len(rows) == 1
    assert rows[0]["key_name"] == "test key"
    # Another user's key prefix as a filter selects nothing of theirs.
    assert len(_rows(client.get(URL, {"key": theirs.prefix}))) == 1


def test_the_page_links_the_export_with_its_filters(client, user, make_key):
    api_key, _ = make_key(user)
    _record(api_key)
    client.force_login(user)

    response = client.get(reverse("dashboard:usage"), {"model": "llama-3.1-8b-instruct", "days": "30"})

    assert f'href="{URL}?model=llama-3.1-8b-instruct&amp;days=30"' in response.content.decode()

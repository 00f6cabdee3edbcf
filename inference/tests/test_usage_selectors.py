"""The Usage page's reads (inference.selectors): series per hour or day and per model, latency
percentiles (percentile_cont on PostgreSQL, the same interpolation in Python on SQLite), error
rates, and which models the filter offers. Times are explicit; CI runs this on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inference.models import UsageRecord
from inference.selectors import (
    MAX_HOURLY_BUCKETS,
    latency_percentiles,
    percentile,
    usage_for_user,
    usage_models_for_user,
    usage_overview,
    usage_series,
    usage_series_resolution,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
LLAMA = "llama-3.1-8b-instruct"
MISTRAL = "mistral-7b-instruct-v0.3"


def _record(user, *, at: datetime = NOW, model: str = LLAMA, **fields) -> UsageRecord:
    values = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "user": user,
        "endpoint": "chat.completions",
        "model": model,
        "status_code": 200,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "latency_ms": 100,
        "time_to_first_token_ms": 10,
        "cost": Decimal("0.00000100"),
        **fields,
    }
    record = UsageRecord.objects.create(**values)
    UsageRecord.objects.filter(pk=record.pk).update(created_at=at)  # created_at is auto_now_add
    return record


def test_percentile_interpolates_like_percentile_cont():
    values = [100, 200, 300, 400, 1000]

    assert percentile(values, 0.5) == 300
    assert percentile(values, 0.95) == pytest.approx(880)  # 400 + 0.8 * (1000 - 400)
    assert percentile([7], 0.95) == 7
    assert percentile([], 0.5) is None


def test_latency_percentiles_of_the_served_requests(user, outsider):
    for latency, ttft in [(100, 10), (1000, None), (300, 30), (200, 20), (400, 40)]:
        _record(user, latency_ms=latency, time_to_first_token_ms=ttft)
    _record(user, status_code=429, latency_ms=1, time_to_first_token_ms=None)  # a refusal is no latency
    _record(outsider, latency_ms=99_999)

    figures = latency_percentiles(usage_for_user(user))

    assert figures["latency_p50"] == pytest.approx(300)
    assert figures["latency_p95"] == pytest.approx(880)
    assert figures["ttft_p50"] == pytest.approx(25)  # of 10, 20, 30, 40
    assert figures["ttft_p95"] == pytest.approx(38.5)


def test_latency_percentiles_per_model_and_of_nothing(user):
    _record(user, model=LLAMA, latency_ms=100)
    _record(user, model=LLAMA, latency_ms=300)
    _record(user, model=MISTRAL, latency_ms=50)

    by_model = latency_percentiles(usage_for_user(user), by="model")

    assert by_model[LLAMA]["latency_p50"] == pytest.approx(200)
    assert by_model[LLAMA]["latency_p95"] == pytest.approx(290)
    assert by_model[MISTRAL]["latency_p50"] == pytest.approx(50)
    assert latency_percentiles(usage_for_user(user, model="other")) == {
        "latency_p50": None,
        "latency_p95": None,
        "ttft_p50": None,
        "ttft_p95": None,
    }


def test_usage_series_per_hour_and_model_with_idle_hours_zero(user, outsider):
    _record(user, at=NOW - timedelta(hours=2, minutes=10), cost=Decimal("0.00000150"))
    _record(user, at=NOW - timedelta(hours=2, minutes=20), status_code=500, prompt_tokens=5, completion_tokens=0)
    _record(user, at=NOW - timedelta(minutes=5), model=MISTRAL, cost=Decimal("0.00000200"))
    _record(user, at=NOW - timedelta(hours=5))  # before the period
    _record(outsider, at=NOW - timedelta(minutes=5))

    start = NOW - timedelta(hours=3)
    series = usage_series(usage_for_user(user, start=start), start=start, end=NOW, per="hour")

    assert series["per"] == "hour"
    assert series["buckets"] == [
        "2026-12-01T09:00:00+00:00",
        "2026-12-01T10:00:00+00:00",
        "2026-12-01T11:00:00+00:00",
        "2026-12-01T12:00:00+00:00",
    ]
    assert series["models"][LLAMA] == {
        "requests": [0, 2, 0, 0],
        "errors": [0, 1, 0, 0],
        "tokens": [0, 35, 0, 0],
        "cost": ["0.00000000", "0.00000250", "0.00000000", "0.00000000"],
    }
    assert series["models"][MISTRAL]["requests"] == [0, 0, 0, 1]
    assert [row["requests"] for row in series["rows"]] == [0, 2, 0, 1]
    assert series["rows"][3]["cost"] == Decimal("0.00000200")


def test_usage_series_per_day(user):
    _record(user, at=NOW - timedelta(days=2))
    _record(user, at=NOW - timedelta(days=2, hours=3))
    _record(user, at=NOW)

    start = NOW - timedelta(days=3)
    series = usage_series(usage_for_user(user, start=start), start=start, end=NOW, per="day")

    assert series["buckets"][0] == "2026-11-28T00:00:00+00:00"
    assert series["models"][LLAMA]["requests"] == [0, 2, 0, 1]


def test_the_series_resolution():
    assert usage_series_resolution(NOW - timedelta(days=1), NOW) == "hour"
    assert usage_series_resolution(NOW - timedelta(days=7), NOW) == "day"
    assert usage_series_resolution(NOW - timedelta(days=7), NOW, "hour") == "hour"
    assert usage_series_resolution(NOW - timedelta(hours=MAX_HOURLY_BUCKETS + 1), NOW, "hour") == "day"
    assert usage_series_resolution(NOW - timedelta(hours=2), NOW, "day") == "day"


def test_usage_overview_error_rates_per_model(user):
    _record(user, status_code=200)
    _record(user, status_code=200)
    _record(user, status_code=429)
    _record(user, status_code=503)
    _record(user, model=MISTRAL, status_code=200, latency_ms=70)

    overview = usage_overview(usage_for_user(user))

    totals = overview["totals"]
    assert (totals["requests"], totals["errors"], totals["error_percent"]) == (5, 2, 40.0)
    rows = {row["model"]: row for row in overview["by_model"]}
    assert (rows[LLAMA]["errors"], rows[LLAMA]["error_percent"]) == (2, 50.0)
    assert (rows[MISTRAL]["error_percent"], rows[MISTRAL]["latency_p50"]) == (0.0, pytest.approx(70))
    assert usage_overview(usage_for_user(user, model="nothing"))["totals"]["error_rate"] is None


def test_the_models_to_filter_by_are_real_ones(user, outsider, catalog):
    _record(user, model=LLAMA, status_code=429)  # in the catalog, though refused
    _record(user, model="retired-model-7b", status_code=200)  # served once, since removed
    _record(user, model="gpt-9-turbo-typo", status_code=404, error_code="model_not_found")
    _record(user, model="", status_code=401)
    _record(outsider, model=MISTRAL)

    assert usage_models_for_user(user) == [LLAMA, "retired-model-7b"]

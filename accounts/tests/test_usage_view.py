import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from inference.models import UsageRecord

pytestmark = pytest.mark.django_db

URL = reverse("dashboard:usage")


def _record(api_key, model="llama-3.1-8b-instruct", **fields) -> UsageRecord:
    values = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "user": api_key.user,
        "api_key": api_key,
        "endpoint": "chat.completions",
        "model": model,
        "deployment": model.replace(".", "-"),
        "worker": "gpuworker-1@test",
        "status_code": 200,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "latency_ms": 350,
        "time_to_first_token_ms": 40,
        "cost": Decimal("0.00000500"),
    }
    values.update(fields)
    return UsageRecord.objects.create(**values)


@pytest.fixture
def keys(user, make_key):
    return make_key(user, name="first")[0], make_key(user, name="second")[0]


def test_it_requires_login(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={URL}"


def test_it_works(client, user, keys):
    first, second = keys
    _record(first, prompt_tokens=11, completion_tokens=22, worker="gpuworker-7@test")
    _record(first, model="mistral-7b-instruct-v0.3", prompt_tokens=5, completion_tokens=7)
    _record(second, status_code=429, prompt_tokens=0, completion_tokens=0, cost=Decimal("0"))
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200

    totals = response.context["totals"]
    assert totals["requests"] == 3
    assert totals["prompt_tokens"] == 16
    assert totals["completion_tokens"] == 29
    assert totals["cost"] == Decimal("0.00001000")
    assert {row["model"]: row["requests"] for row in response.context["by_model"]} == {
        "llama-3.1-8b-instruct": 2,
        "mistral-7b-instruct-v0.3": 1,
    }

    content = response.content.decode()
    assert "mistral-7b-instruct-v0.3" in content
    assert f"{first.display_prefix}…" in content
    assert f"{second.display_prefix}…" in content
    assert "gpuworker-7@test" in content
    assert ">429<" in content
    assert reverse("api-usage") in content


def test_it_rejects_outsider(client, user, outsider, keys, make_key):
    outsider_key, _ = make_key(outsider, name="mallory key")
    _record(keys[0])
    _record(outsider_key, model="secret-model", worker="mallory-worker")
    client.force_login(user)
    response = client.get(URL)
    assert response.context["totals"]["requests"] == 1
    content = response.content.decode()
    assert "secret-model" not in content
    assert "mallory-worker" not in content
    assert outsider_key.prefix not in content


def test_it_filters_by_model(client, user, keys):
    _record(keys[0], model="llama-3.1-8b-instruct", worker="llama-worker")
    _record(keys[0], model="mistral-7b-instruct-v0.3", worker="mistral-worker")
    client.force_login(user)
    response = client.get(URL, {"model": "mistral-7b-instruct-v0.3", "days": "7"})
    assert response.context["totals"]["requests"] == 1
    assert [r.model for r in response.context["records"]] == ["mistral-7b-instruct-v0.3"]
    assert b"mistral-worker" in response.content
    assert b"llama-worker" not in response.content


def test_it_filters_by_key(client, user, keys):
    first, second = keys
    _record(first, worker="first-worker")
    _record(second, worker="second-worker")
    _record(second, worker="second-worker")
    client.force_login(user)
    response = client.get(URL, {"key": second.prefix, "days": ""})
    assert response.context["totals"]["requests"] == 2
    assert {r.api_key_id for r in response.context["records"]} == {second.pk}
    assert b"first-worker" not in response.content


def test_it_filters_by_days(client, user, keys):
    old = _record(keys[0], worker="old-worker")
    UsageRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    _record(keys[0], worker="new-worker")
    client.force_login(user)

    response = client.get(URL)  # the last 7 days by default
    assert response.context["totals"]["requests"] == 1
    assert b"old-worker" not in response.content

    response = client.get(URL, {"days": "30"})
    assert response.context["totals"]["requests"] == 2


def test_it_ignores_outsider_key_filter(client, user, outsider, keys, make_key):
    outsider_key, _ = make_key(outsider)
    _record(outsider_key)
    client.force_login(user)
    response = client.get(URL, {"key": outsider_key.prefix})
    assert response.status_code == 200
    assert response.context["totals"]["requests"] == 0


def test_it_shows_empty_state(client, user):
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200
    assert b"No requests match these filters" in response.content


def test_it_shows_key_names(client, user, keys):
    first, _ = keys
    _record(first)
    client.force_login(user)

    response = client.get(URL)

    assert f'<span class="key-name" title="{first.display_prefix}…">first</span>' in response.content.decode()


def test_it_pages_past_100_requests_keeping_the_filters(client, user, keys):
    for _ in range(130):
        _record(keys[0], model="mistral-7b-instruct-v0.3")
    _record(keys[0], model="llama-3.1-8b-instruct")
    client.force_login(user)

    first = client.get(URL, {"model": "mistral-7b-instruct-v0.3", "days": "7"})
    second = client.get(URL, {"model": "mistral-7b-instruct-v0.3", "days": "7", "page": "2"})

    assert len(first.context["records"]) == 100
    assert len(second.context["records"]) == 30
    first_ids = {r.pk for r in first.context["records"]}
    assert first_ids.isdisjoint(r.pk for r in second.context["records"])
    assert "model=mistral-7b-instruct-v0.3&amp;days=7&amp;page=2" in first.content.decode()
    assert "Requests 101\u2013130 of 130" in second.content.decode()
    assert first.context["totals"]["requests"] == 130  # the totals cover every page


def test_it_offers_only_real_models_in_the_filter(client, user, keys, catalog):
    _record(keys[0], model="llama-3.1-8b-instruct")
    _record(keys[0], model="no-such-model", status_code=404, error_code="model_not_found")
    client.force_login(user)

    response = client.get(URL)

    choices = [value for value, _ in response.context["form"].fields["model"].choices]
    assert choices == ["", "llama-3.1-8b-instruct"]


def test_it_shows_latency_percentiles_and_the_error_rate(client, user, keys):
    for latency in (100, 200, 300, 400, 1000):
        _record(keys[0], latency_ms=latency)
    _record(keys[0], status_code=503, error_code="no_worker_available", latency_ms=30000)
    client.force_login(user)

    response = client.get(URL)

    totals = response.context["totals"]
    assert (totals["latency_p50"], round(totals["latency_p95"])) == (300, 880)
    content = response.content.decode()
    assert '<span class="stat-value" id="latency">300 <span class="stat-of">/</span> 880' in content
    assert "16.7%" in content  # 1 of 6


def test_it_passes_the_chart_its_series(client, user, keys):
    _record(keys[0])
    client.force_login(user)

    response = client.get(URL, {"days": "1"})

    chart = response.context["chart"]
    assert chart["per"] == "hour"
    assert len(chart["buckets"]) in (24, 25)
    assert sum(chart["models"]["llama-3.1-8b-instruct"]["requests"]) == 1
    assert '<script id="usage-series" type="application/json">' in response.content.decode()
    assert "vendor/chartjs/chart.umd.js" in response.content.decode()


def test_it_charts_per_day_when_asked(client, user, keys):
    _record(keys[0])
    client.force_login(user)

    response = client.get(URL, {"days": "1", "per": "day"})

    assert response.context["chart"]["per"] == "day"
    assert len(response.context["chart"]["buckets"]) in (1, 2)

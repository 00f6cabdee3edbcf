"""The request metrics add up in Redis: what several processes observe is one set of series."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from gpucloud.redis_client import get_redis
from observability import metrics
from observability.metrics import E2E_LATENCY, REQUESTS, SPEND, AggregatedCollector, Deltas


@pytest.fixture(autouse=True)
def _no_metrics():
    """Start from no series (other tests' requests add to the same Redis hashes)."""
    metrics.deltas.flush()
    for definition in metrics.DEFINITIONS:
        get_redis().delete(definition.redis_key)
    yield


def _scrape() -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AggregatedCollector())
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_two_processes_add_up():
    first, second = Deltas(), Deltas()  # what two web processes hold before they flush
    first.add(REQUESTS, ("m", "chat.completions", "200"))
    first.add(REQUESTS, ("m", "chat.completions", "200"))
    second.add(REQUESTS, ("m", "chat.completions", "200"))
    second.add(REQUESTS, ("m", "chat.completions", "429"))
    first.add(SPEND, ("m",), 0.25)
    second.add(SPEND, ("m",), 0.5)
    assert first.flush() and second.flush()
    samples = _scrape()
    assert (
        samples["gpucloud:requests_total", (("endpoint", "chat.completions"), ("model_name", "m"), ("status", "200"))]
        == 3
    )
    assert (
        samples["gpucloud:requests_total", (("endpoint", "chat.completions"), ("model_name", "m"), ("status", "429"))]
        == 1
    )
    assert samples["gpucloud:spend_usd_total", (("model_name", "m"),)] == 0.75


def test_histograms_are_cumulative_with_sum_and_count():
    first, second = Deltas(), Deltas()
    labels = ("m", "completions")
    first.observe(E2E_LATENCY, labels, 0.04)  # in the 0.05 bucket
    second.observe(E2E_LATENCY, labels, 0.7, times=2)  # 0.8
    second.observe(E2E_LATENCY, labels, 10_000)  # only +Inf
    first.flush(), second.flush()
    samples = _scrape()

    def bucket(le: str) -> float:
        key = (("endpoint", "completions"), ("le", le), ("model_name", "m"))
        return samples["gpucloud:e2e_request_latency_seconds_bucket", key]

    assert (bucket("0.01"), bucket("0.05"), bucket("0.5"), bucket("0.8"), bucket("7680.0"), bucket("+Inf")) == (
        0,
        1,
        1,
        3,
        3,
        4,
    )
    series = (("endpoint", "completions"), ("model_name", "m"))
    assert samples["gpucloud:e2e_request_latency_seconds_count", series] == 4
    assert samples["gpucloud:e2e_request_latency_seconds_sum", series] == pytest.approx(10_001.44)


def test_a_scrape_includes_what_its_own_process_has_not_flushed_yet():
    metrics.deltas.add(REQUESTS, ("own", "embeddings", "200"))
    samples = _scrape()
    assert (
        samples["gpucloud:requests_total", (("endpoint", "embeddings"), ("model_name", "own"), ("status", "200"))] == 1
    )


def test_deltas_wait_while_redis_is_away(monkeypatch):
    deltas = Deltas()
    deltas.add(REQUESTS, ("m", "completions", "200"), 2)

    class Down:
        def pipeline(self, **kwargs):
            raise RedisConnectionError("Redis is away")

    monkeypatch.setattr("gpucloud.redis_client.get_redis", lambda: Down())
    assert deltas.flush() is False
    deltas.add(REQUESTS, ("m", "completions", "200"))
    monkeypatch.undo()
    assert deltas.flush() is True
    assert (
        _scrape()["gpucloud:requests_total", (("endpoint", "completions"), ("model_name", "m"), ("status", "200"))] == 3
    )


def test_a_request_settled_for_a_dead_web_process_is_counted():
    from decimal import Decimal
    from types import SimpleNamespace

    record = SimpleNamespace(
        model="m",
        endpoint="chat.completions",
        status_code=499,
        prompt_tokens=7,
        completion_tokens=5,
        cost=Decimal("0.25"),
    )
    metrics.orphan_settled(record)
    samples = _scrape()
    requests = (("endpoint", "chat.completions"), ("model_name", "m"), ("status", "499"))
    assert samples["gpucloud:requests_total", requests] == 1
    assert samples["gpucloud:prompt_tokens_total", (("model_name", "m"),)] == 7
    assert samples["gpucloud:generation_tokens_total", (("model_name", "m"),)] == 5
    assert samples["gpucloud:spend_usd_total", (("model_name", "m"),)] == 0.25

"""``GET /health``: database, Redis and live GPU workers."""

import time

import pytest

from deployments.presence import WORKERS_KEY, worker_gone, worker_seen
from gpucloud.redis_client import get_redis

pytestmark = pytest.mark.django_db

WORKER = "gpuworker-health-test@localhost"


@pytest.fixture
def worker():
    worker_seen(WORKER)
    yield WORKER
    worker_gone(WORKER)


def test_it_reports_unavailable_without_workers(client):
    response = client.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert set(body["checks"]) == {"database", "redis", "workers"}
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["redis"] == {"ok": True}
    assert body["checks"]["workers"] == {"ok": False, "count": 0, "names": []}


def test_it_works(client, worker):
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "workers"}
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["workers"] == {"ok": True, "count": 1, "names": [WORKER]}


def test_it_forgets_a_worker_that_left(client, worker):
    worker_gone(worker)

    response = client.get("/health")

    assert response.status_code == 503
    assert response.json()["checks"]["workers"]["count"] == 0


def test_it_ignores_a_stale_worker(client, worker, settings):
    # The worker last announced itself long ago (it died without saying goodbye).
    get_redis().zadd(WORKERS_KEY, {worker: time.time() - settings.WORKER_OFFLINE_AFTER - 5})

    response = client.get("/health")

    assert response.status_code == 503
    assert response.json()["checks"]["workers"]["ok"] is False


def test_it_reports_each_models_readiness_apart_from_liveness(client, worker, catalog):
    from deployments.models import Replica

    Replica.objects.filter(deployment__model__model_id="qwen2.5-72b-instruct").update(state=Replica.State.STARTING)

    response = client.get("/health")

    assert response.status_code == 200  # a model still loading does not make the platform unhealthy
    assert response.json()["models"] == {
        "llama-3.1-8b-instruct": True,
        "mistral-7b-instruct-v0.3": True,
        "qwen2.5-72b-instruct": False,
    }

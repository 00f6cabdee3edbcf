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


def test_it_reports_each_models_readiness_apart_from_liveness(client, worker):
    from deployments.models import CatalogModel, Deployment, Replica, WorkerNode

    node = WorkerNode.objects.create(name="health-node", credential_prefix="health000001", hashed_credential="-")
    for model_id, state in [("ready-model", Replica.State.RUNNING), ("loading-model", Replica.State.STARTING)]:
        model = CatalogModel.objects.create(model_id=model_id, family="test", parameters_billion=1)
        deployment = Deployment.objects.create(name=model_id, model=model, status=Deployment.Status.STARTING)
        Replica.objects.create(deployment=deployment, node=node, state=state, memory_gb=1)

    response = client.get("/health")

    assert response.status_code == 200  # a model still loading does not make the platform unhealthy
    models = response.json()["models"]
    assert (models["ready-model"], models["loading-model"]) == (True, False)

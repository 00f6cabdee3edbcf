"""``/api/deployments``: operators create, scale, stop and delete deployments with a management key."""

from __future__ import annotations

import json

import pytest

from deployments.models import Deployment

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_key(user, make_key):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return make_key(user)[1]


def call(client, method: str, path: str, key: str, body: dict | None = None):
    return getattr(client, method)(
        path,
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def test_it_lists_deployments_with_their_state(client, operator_key, catalog):
    response = call(client, "get", "/api/deployments", operator_key)
    assert response.status_code == 200
    names = {d["name"]: d for d in response.json()["data"]}
    llama = names["llama-3-1-8b-instruct"]
    assert (llama["model"], llama["status"], llama["replicas_running"]) == ("llama-3.1-8b-instruct", "running", 1)
    assert llama["memory_gb_per_replica"] == 17.5
    assert response["x-ratelimit-remaining-requests"]


def test_it_creates_scales_stops_and_deletes(client, operator_key, catalog):
    created = call(
        client, "post", "/api/deployments", operator_key,
        {"name": "mistral-int4", "model": "mistral-7b-instruct-v0.3", "precision": "int4", "placement": "spread"},
    )  # fmt: skip
    assert created.status_code == 201, created.content
    assert created.json()["status"] in ("starting", "scheduling")
    assert created.json()["queue"] == "deployment.mistral-int4"

    scaled = call(client, "patch", "/api/deployments/mistral-int4", operator_key, {"replicas": 0})
    assert (scaled.status_code, scaled.json()["replicas"]) == (200, 0)

    stopped = call(client, "patch", "/api/deployments/mistral-int4", operator_key, {"status": "stopped"})
    assert stopped.json()["status"] == "stopped"

    assert call(client, "delete", "/api/deployments/mistral-int4", operator_key).status_code == 204
    assert not Deployment.objects.filter(name="mistral-int4").exists()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "model": "no-such-model"}, "model"),
        ({"name": "bad name!", "model": "llama-3.1-8b-instruct"}, "name"),
        ({"name": "llama-3-1-8b-instruct", "model": "llama-3.1-8b-instruct"}, "name"),
        ({"name": "x", "model": "llama-3.1-8b-instruct", "precision": "fp64"}, "precision"),
        ({"name": "x", "model": "llama-3.1-8b-instruct", "engine": "magic"}, "engine"),
    ],
)
def test_it_rejects_bad_input_naming_the_param(client, operator_key, catalog, body, param):
    response = call(client, "post", "/api/deployments", operator_key, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_it_answers_404_for_an_unknown_deployment(client, operator_key, catalog):
    response = call(client, "patch", "/api/deployments/nope", operator_key, {"replicas": 2})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "deployment_not_found"


def test_it_rejects_a_key_of_a_non_operator(client, user, make_key, catalog):
    _, key = make_key(user)
    response = call(client, "get", "/api/deployments", key)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_an_operator"

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


# --- One rule, one place: the service decides for POST and PATCH alike -----------------------------

NOT_AN_OBJECT = ["1", True, 1e308, [], 0, False, ""]


def assert_rejected(response, param: str) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    return error


@pytest.mark.parametrize("engine_config", NOT_AN_OBJECT)
def test_post_rejects_an_engine_config_that_is_not_an_object(client, operator_key, catalog, engine_config):
    body = {"name": "x", "model": "llama-3.1-8b-instruct", "engine_config": engine_config}

    error = assert_rejected(call(client, "post", "/api/deployments", operator_key, body), "engine_config")

    assert "JSON object" in error["message"]
    assert not Deployment.objects.filter(name="x").exists()


@pytest.mark.parametrize("engine_config", NOT_AN_OBJECT)
def test_patch_rejects_an_engine_config_that_is_not_an_object(client, operator_key, catalog, engine_config):
    path = f"/api/deployments/{catalog[0].name}"
    response = call(client, "patch", path, operator_key, {"engine_config": engine_config})

    error = assert_rejected(response, "engine_config")

    assert "JSON object" in error["message"]
    catalog[0].refresh_from_db()
    assert catalog[0].engine_config == {}


@pytest.mark.parametrize("method", ["post", "patch"])
def test_it_refuses_an_inline_api_key(client, operator_key, catalog, method):
    config = {"base_url": "http://127.0.0.1:8001/v1", "api_key": "sk-secret"}
    if method == "post":
        body = {"name": "x", "model": "llama-3.1-8b-instruct", "engine": "openai", "engine_config": config}
        response = call(client, "post", "/api/deployments", operator_key, body)
    else:
        response = call(client, "patch", f"/api/deployments/{catalog[0].name}", operator_key, {"engine_config": config})

    error = assert_rejected(response, "engine_config")

    assert "api_key_env" in error["message"]
    assert "sk-secret" not in error["message"]
    assert not Deployment.objects.filter(engine_config__has_key="api_key").exists()


@pytest.mark.parametrize("method", ["post", "patch"])
def test_it_caps_replicas_at_64(client, operator_key, catalog, method):
    if method == "post":
        body = {"name": "x", "model": "llama-3.1-8b-instruct", "replicas": 65}
        response = call(client, "post", "/api/deployments", operator_key, body)
    else:
        response = call(client, "patch", f"/api/deployments/{catalog[0].name}", operator_key, {"replicas": 65})

    assert "64" in assert_rejected(response, "replicas")["message"]


@pytest.mark.parametrize("path", ["/api/deployments", "/api/workers/register"])
def test_it_answers_deep_json_with_a_400(client, operator_key, catalog, path):
    deep = ("[" * 5000 + "]" * 5000).encode()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {operator_key}"}

    response = client.post(path, data=deep, content_type="application/json", **auth)

    assert response.status_code == 400
    assert "nested" in response.json()["error"]["message"]


def test_it_answers_multipart_with_a_415(client, operator_key, catalog):
    response = client.post("/api/deployments", {"name": "x"}, HTTP_AUTHORIZATION=f"Bearer {operator_key}")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"

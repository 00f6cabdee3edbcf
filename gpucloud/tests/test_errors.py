"""Errors under the API paths are JSON in the OpenAI shape."""

import pytest
from django.test import Client

from inference.models import UsageRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Users are created for every test; the production hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def assert_openai_error(response, status: int, type: str = "invalid_request_error") -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type
    assert error["message"]
    return error


@pytest.mark.parametrize("path", ["/v1/nonexistent", "/v1/assistants", "/v1/chat/completion", "/api/nothing"])
def test_it_returns_404_for_an_unknown_api_url(client, path):
    error = assert_openai_error(client.get(path), 404)

    assert error["code"] == "unknown_url"
    assert path in error["message"]


def test_it_keeps_html_404s_outside_the_api(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_it_returns_405_for_a_wrong_method(client):
    response = client.get("/v1/chat/completions")

    assert_openai_error(response, 405)
    assert response["Allow"] == "POST"


@pytest.mark.parametrize("method", ["post", "delete"])
def test_it_returns_405_for_a_wrong_method_without_a_csrf_cookie(user, make_key, catalog, method):
    # API clients send a bearer key and no cookies, so CSRF protection must not answer first.
    _, raw_key = make_key(user)
    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)("/v1/models", headers={"Authorization": f"Bearer {raw_key}"})

    assert_openai_error(response, 405)
    assert response["Allow"] == "GET"


def test_it_returns_400_for_malformed_json(client, user, make_key, catalog):
    api_key, raw_key = make_key(user)

    response = client.post(
        "/v1/chat/completions",
        data=b'{"model": "llama-3.1-8b-instruct", "messages": [',
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )

    error = assert_openai_error(response, 400)
    assert "JSON" in error["message"]
    assert "Traceback" not in error["message"]
    # The failed request is metered once, under its request id.
    record = UsageRecord.objects.get()
    assert record.request_id == response["x-request-id"]
    assert record.api_key == api_key
    assert record.status_code == 400
    assert record.completion_tokens == 0

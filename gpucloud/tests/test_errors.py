"""Errors under the API paths are JSON in the OpenAI shape."""

import pytest
from django.test import Client

from inference.models import UsageRecord

pytestmark = pytest.mark.django_db


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


def test_it_returns_404_for_a_post_to_an_unknown_api_url_without_csrf(user, make_key, catalog):
    # Not the CSRF failure page: API clients send no CSRF token.
    _, raw_key = make_key(user)
    client = Client(enforce_csrf_checks=True)

    response = client.post(
        "/v1/assistants", data=b"{}", content_type="application/json", headers={"Authorization": f"Bearer {raw_key}"}
    )

    assert assert_openai_error(response, 404)["code"] == "unknown_url"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/api/usage", "/api/nothing"])
def test_it_answers_a_wrong_host_in_the_openai_shape(client, path):
    response = client.get(path, HTTP_HOST="evil.example.com")

    assert assert_openai_error(response, 400)["code"] == "invalid_host"


def test_it_answers_a_wrong_host_with_html_outside_the_api(client):
    response = client.get("/login/", HTTP_HOST="evil.example.com")

    assert response.status_code == 400
    assert not response["Content-Type"].startswith("application/json")


def test_it_answers_a_multipart_body_with_415(client, user, make_key, catalog):
    _, raw_key = make_key(user)

    response = client.post(
        "/v1/chat/completions", {"model": "llama-3.1-8b-instruct"}, headers={"Authorization": f"Bearer {raw_key}"}
    )

    assert assert_openai_error(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "\\ud800", "messages": []}', "model"),
        (b'{"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "\\udc00"}]}', None),
        (b'{"model": "llama-3.1-8b-instruct", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}", None),
        (b'{"model": "llama-3.1-8b-instruct", "max_tokens": ' + b"1" * 5000 + b"}", None),
    ],
)
def test_it_answers_hostile_json_with_a_400(client, user, make_key, catalog, body, param):
    _, raw_key = make_key(user)

    response = client.post(
        "/v1/chat/completions",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )

    error = assert_openai_error(response, 400)
    if param:
        assert error["param"] == param


def test_it_answers_nul_in_a_query_with_a_400(client):
    error = assert_openai_error(client.get("/api/usage?model=a%00b"), 400)

    assert error["param"] == "model"


# --- The dashboard's own error pages ---------------------------------------------------------------


def _assert_dashboard_page(response, status: int, text: str) -> None:
    assert response.status_code == status
    content = response.content.decode()
    assert "css/app.css" in content  # the dashboard's look (templates/base.html)
    assert "GPU Cloud" in content
    assert text in content


def test_the_404_page_is_styled(client):
    _assert_dashboard_page(client.get("/no-such-page/"), 404, "Page not found")


def test_the_403_page_is_styled(client, user):
    client.force_login(user)

    _assert_dashboard_page(client.get("/fleet/"), 403, "not allowed")


def test_the_500_page_is_styled(rf):
    from gpucloud.views import server_error

    _assert_dashboard_page(server_error(rf.get("/keys/")), 500, "went wrong")


def test_a_database_outage_is_a_503_the_client_may_retry(client, settings, monkeypatch):
    from django.db import OperationalError

    import inference.views

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(inference.views, "servable_models", down)
    from django.contrib.auth import get_user_model

    from accounts.services import api_key_create

    owner = get_user_model().objects.create_user("outage", "o@example.com", "a long password here")
    _, key = api_key_create(user=owner, name="k", scopes=("inference",))
    client.raise_request_exception = False

    response = client.get("/v1/models", headers={"authorization": f"Bearer {key}"})

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "platform_unavailable"

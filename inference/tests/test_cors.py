"""CORS: browsers may call /v1/* with a bearer API key from any origin (or the configured ones);
never the cookie-authenticated pages or the /api/* session views."""

import httpx
import openai
import pytest
from django.test import Client

ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "HTTP_ORIGIN": ORIGIN,
    "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization, content-type, x-stainless-os",
}


@pytest.fixture
def client():
    return Client()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"])
def test_a_preflight_on_v1_allows_the_bearer_key_and_json(client, path):
    response = client.options(path, **PREFLIGHT)

    assert response.status_code == 200
    assert response["access-control-allow-origin"] == "*"
    allowed = {h.strip() for h in response["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os"} <= allowed
    assert "POST" in response["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response


@pytest.mark.django_db
def test_v1_answers_errors_included_carry_cors_headers(client):
    response = client.get("/v1/models", HTTP_ORIGIN=ORIGIN)

    assert response.status_code == 401
    assert response["access-control-allow-origin"] == "*"
    assert "x-request-id" in response["access-control-expose-headers"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/keys/", "/api/usage/", "/", "/login/", "/dashboard/"])
def test_no_cors_outside_v1(client, path):
    preflight = client.options(path, **PREFLIGHT)
    plain = client.get(path, HTTP_ORIGIN=ORIGIN)

    for response in (preflight, plain):
        assert "access-control-allow-origin" not in response
        assert "access-control-allow-headers" not in response


@pytest.mark.django_db
def test_configured_origins_only(client, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]

    allowed = client.options("/v1/chat/completions", **PREFLIGHT)
    refused = client.options("/v1/chat/completions", **{**PREFLIGHT, "HTTP_ORIGIN": "https://evil.example"})

    assert allowed["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in refused


@pytest.mark.live
def test_a_browser_style_call_against_the_live_server(live, make_key):
    key = make_key(live.user, rpm=1000)[1]
    preflight = httpx.options(
        f"{live.url}/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert {"authorization", "content-type"} <= {
        h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")
    }

    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, default_headers={"Origin": ORIGIN}, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="llama-3.1-8b-instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert raw.headers["access-control-allow-origin"] == "*"
    assert raw.parse().choices[0].message.content

"""``GET /metrics``: a scraper's bearer token or a staff session; everyone else is refused."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN


def test_it_works_with_the_token(client):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    body = response.content.decode()
    assert "# TYPE gpucloud:time_to_first_token_seconds histogram" in body
    assert "# TYPE gpucloud:requests_total counter" in body


def test_it_works_for_a_staff_session(client, staff):
    client.force_login(staff)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "# TYPE gpucloud:node_up gauge" in response.content.decode()


def test_it_rejects_a_wrong_token(client):
    response = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_metrics_token"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_rejects_a_wrong_token_even_for_staff(client, staff):
    client.force_login(staff)
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_it_requires_credentials(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_metrics_token"


def test_it_rejects_a_user_who_is_not_staff(client, user):
    client.force_login(user)
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"] == {
        "message": "Only staff may read the metrics.",
        "type": "permission_error",
        "param": None,
        "code": "staff_only",
    }


def test_an_empty_token_setting_accepts_no_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_an_api_key_is_not_a_metrics_token(client, staff, make_key):
    _, key = make_key(staff)
    assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_it_requires_get(client):
    assert client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405

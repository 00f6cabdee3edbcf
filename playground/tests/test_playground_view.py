"""The playground page and its endpoint, in-process: who sees it, which models it offers, that no
key reaches the page, and that the endpoint is the /v1 view under the user's playground key
(session and CSRF instead of a bearer key; the same validation, limits, admission and metering).
Streaming from a real node is in test_playground_live.py and test_playground_browser.py."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from billing import services as billing_services
from deployments.models import CatalogModel, Deployment, Task
from inference.models import UsageRecord
from playground.services import PLAYGROUND_KEY_NAME, playground_key

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = reverse("playground:playground")
ENDPOINT = reverse("playground:chat-completions")
MODEL = "llama-3.1-8b-instruct"


@pytest.fixture(autouse=True)
def quick(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.INFERENCE_QUEUE_TIMEOUT = 0.01


def _post(client, body: dict | None = None, **headers):
    body = body if body is not None else {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    return client.post(ENDPOINT, data=json.dumps(body), content_type="application/json", **headers)


def _csrf_client(user) -> tuple[Client, str]:
    """A browser-like client: CSRF checks on, logged in, with the token the page gives its script."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(PAGE)
    token = page.content.decode().split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    return client, token


def test_it_requires_login(client):
    response = client.get(PAGE)

    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_it_offers_the_chat_models_being_served(client, user, catalog):
    client.force_login(user)
    Deployment.objects.filter(model__model_id="mistral-7b-instruct-v0.3").update(status=Deployment.Status.STOPPED)

    response = client.get(PAGE)

    assert response.status_code == 200
    offered = [model.model_id for model in response.context["models"]]
    assert MODEL in offered
    assert "mistral-7b-instruct-v0.3" not in offered
    assert not CatalogModel.objects.filter(model_id__in=offered, task=Task.EMBEDDING).exists()
    assert f'<option value="{MODEL}">' in response.content.decode()


def test_it_says_so_when_no_model_is_served(client, user, db):
    client.force_login(user)

    response = client.get(PAGE)

    assert response.status_code == 200
    assert "No chat model is being served" in response.content.decode()


def test_the_page_holds_no_key(client, user, catalog):
    client.force_login(user)
    playground_key(user)

    html = client.get(PAGE).content.decode()

    assert "gpc_" not in html
    assert 'data-endpoint="/playground/chat/completions"' in html
    assert 'data-api-base="http://testserver/v1"' in html


def test_the_endpoint_refuses_a_visitor_without_a_session(client, catalog):
    response = _post(client)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert not UsageRecord.objects.exists()


def test_the_endpoint_refuses_a_request_without_the_csrf_token(user, catalog):
    client, _ = _csrf_client(user)

    response = _post(client)

    assert response.status_code == 403
    assert not UsageRecord.objects.exists()


def test_it_requires_post(user, catalog):
    client, _ = _csrf_client(user)

    response = client.get(ENDPOINT)

    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_endpoint_runs_the_api_view_under_the_playground_key(user, catalog):
    client, token = _csrf_client(user)

    response = _post(client, {"model": MODEL, "messages": []}, HTTP_X_CSRFTOKEN=token)

    # The /v1 view's own validation, in the OpenAI shape, recorded under the playground key.
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.user, record.api_key.name, record.status_code) == (user, PLAYGROUND_KEY_NAME, 400)
    assert response["x-ratelimit-limit-requests"] == str(record.api_key.rpm)


def test_the_endpoint_admits_and_settles_like_the_api(user, catalog):
    client, token = _csrf_client(user)

    response = _post(client, HTTP_X_CSRFTOKEN=token)

    # Admitted (the worst case reserved), queued, and nobody serves here: the API's 503, settled free.
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_worker_available"
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert record.api_key == playground_key(user)
    assert record.price_version is not None and record.prompt_tokens > 0


def test_the_balance_limits_the_playground(user, catalog):
    from decimal import Decimal

    billing_services.adjustment(user=user, amount=Decimal("-5.00"))
    client, token = _csrf_client(user)

    response = _post(client, HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


def test_the_playground_keys_rate_limit_applies(user, catalog):
    key = playground_key(user)
    key.rpm = 1
    key.save(update_fields=["rpm"])
    client, token = _csrf_client(user)

    first = _post(client, {"model": MODEL, "messages": []}, HTTP_X_CSRFTOKEN=token)
    second = _post(client, {"model": MODEL, "messages": []}, HTTP_X_CSRFTOKEN=token)

    assert first.status_code == 400
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_revoked_playground_key_is_replaced_not_used(user, catalog):
    from accounts.services import api_key_revoke

    old = playground_key(user)
    api_key_revoke(api_key=old)
    client, token = _csrf_client(user)

    response = _post(client, {"model": MODEL, "messages": []}, HTTP_X_CSRFTOKEN=token)

    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert record.api_key != old and record.api_key.is_active

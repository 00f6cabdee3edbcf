"""Model names and aliases resolve to deployments; keys' model allow-lists; models with no replica."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest
from django.test import Client

from deployments.models import CatalogModel, ModelAlias

HELLO = [{"role": "user", "content": "Hello"}]


def _chat(client: Client, key: str, model: str):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": model, "messages": HELLO}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


@pytest.mark.django_db
def test_the_model_list_honours_the_keys_allow_list(client, user, make_key, catalog):
    _, key = make_key(user, allowed_models=["mistral-7b-instruct-v0.3"])
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert [m["id"] for m in response.json()["data"]] == ["mistral-7b-instruct-v0.3"]

    hidden = client.get("/v1/models/llama-3.1-8b-instruct", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "model_not_found"


@pytest.mark.django_db
def test_a_model_outside_the_allow_list_is_refused(client, user, make_key, catalog):
    _, key = make_key(user, allowed_models=["mistral-7b-instruct-v0.3"])
    for name in ("llama-3.1-8b-instruct", "llama-3.1-8b"):  # by id and by alias
        response = _chat(client, key, name)
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("permission_error", "model_not_allowed", "model")
        assert "mistral-7b-instruct-v0.3" in error["message"]


@pytest.mark.django_db
def test_an_unknown_model_in_the_allow_list_is_rejected(user, make_key, catalog):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        make_key(user, allowed_models=["no-such-model"])


@pytest.mark.django_db
def test_a_model_without_a_running_deployment_answers_503(client, user, make_key, catalog):
    CatalogModel.objects.create(model_id="idle-model", family="test", parameters_billion=Decimal("1"))
    _, key = make_key(user)
    response = _chat(client, key, "idle-model")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_ready"
    assert "no running deployment" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_aliases_show_the_model_itself(client, user, make_key, catalog):
    _, key = make_key(user)
    assert ModelAlias.objects.get(alias="llama-3.1-8b").model.model_id == "llama-3.1-8b-instruct"
    response = client.get("/v1/models/llama-3.1-8b", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.json()["id"] == "llama-3.1-8b-instruct"


@pytest.mark.live
def test_an_alias_is_served_by_its_models_deployment(live, make_key):
    _, key = make_key(live.user)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)
    completion = client.chat.completions.create(model="llama-3.1-8b", messages=HELLO, max_tokens=3)
    assert completion.model == "llama-3.1-8b-instruct"
    assert completion.usage.completion_tokens == 3

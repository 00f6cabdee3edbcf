"""deployments.services: the rules every write path of a deployment goes through."""

import pytest
from django.core.exceptions import ValidationError

from deployments.models import CatalogModel, Deployment
from deployments.services import MAX_REPLICAS, deployment_create, deployment_update

pytestmark = pytest.mark.django_db


def llama() -> CatalogModel:
    return CatalogModel.objects.get(model_id="llama-3.1-8b-instruct")


@pytest.mark.parametrize("engine_config", ["1", True, 1e308, [], 0, False, ""])
def test_create_refuses_an_engine_config_that_is_not_an_object(catalog, engine_config):
    with pytest.raises(ValidationError) as caught:
        deployment_create(name="x", model=llama(), engine_config=engine_config)

    assert "engine_config" in caught.value.message_dict
    assert not Deployment.objects.filter(name="x").exists()


@pytest.mark.parametrize("engine_config", ["1", True, 1e308, []])
def test_update_refuses_an_engine_config_that_is_not_an_object(catalog, engine_config):
    with pytest.raises(ValidationError) as caught:
        deployment_update(deployment=catalog[0], engine_config=engine_config)

    assert "engine_config" in caught.value.message_dict


def test_it_refuses_an_inline_api_key(catalog):
    with pytest.raises(ValidationError) as caught:
        deployment_create(name="x", model=llama(), engine="openai", engine_config={"api_key": "sk-1"})

    assert "api_key_env" in caught.value.message_dict["engine_config"][0]
    with pytest.raises(ValidationError):
        deployment_update(deployment=catalog[0], engine_config={"api_key": "sk-1"})


def test_it_accepts_api_key_env(catalog):
    deployment = deployment_create(
        name="x", model=llama(), engine="openai", engine_config={"api_key_env": "VLLM_API_KEY"}
    )

    assert deployment.engine_config == {"api_key_env": "VLLM_API_KEY"}


def test_it_caps_replicas(catalog):
    with pytest.raises(ValidationError) as caught:
        deployment_create(name="x", model=llama(), replicas=MAX_REPLICAS + 1)
    assert "replicas" in caught.value.message_dict

    with pytest.raises(ValidationError):
        deployment_update(deployment=catalog[0], replicas=MAX_REPLICAS + 1)
    catalog[0].refresh_from_db()
    assert catalog[0].replicas == 1

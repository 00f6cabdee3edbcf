from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from deployments.models import CatalogModel, Deployment, ModelAlias

pytestmark = pytest.mark.django_db

URL = reverse("fleet:models")


@pytest.fixture
def operator(client, staff):
    client.force_login(staff)
    return client


def _model_data(**fields) -> dict:
    return {
        "model_id": "phi-3-mini",
        "family": "phi",
        "owned_by": "microsoft",
        "licence": "mit",
        "parameters_billion": "3.8",
        "context_length": "4096",
        "price_input_per_million": "0.05",
        "price_output_per_million": "0.0150",
        "default_engine": "simulated",
        "task": "chat",
        "memory_fp16": "9",
        "memory_int8": "",
        "memory_int4": "2.75",
        "aliases": " phi3 , phi-3-mini-4k,phi3, ",
        **fields,
    }


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_it_requires_login(client, catalog):
    model = catalog[0].model
    for url in (URL, reverse("fleet:model-edit", args=[model.pk]), reverse("fleet:model-delete", args=[model.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url == f"{reverse('login')}?next={url}"


def test_it_rejects_outsider(client, user):
    client.force_login(user)
    assert client.get(URL).status_code == 403
    assert client.post(URL, _model_data()).status_code == 403
    assert not CatalogModel.objects.exists()
    model = CatalogModel.objects.create(model_id="m", family="f", parameters_billion=Decimal("1"))
    assert client.post(reverse("fleet:model-edit", args=[model.pk]), _model_data()).status_code == 403
    assert client.post(reverse("fleet:model-delete", args=[model.pk])).status_code == 403
    assert CatalogModel.objects.get().model_id == "m"


def test_it_works(operator, catalog):
    response = operator.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    for deployment in catalog:
        model = deployment.model
        assert model.model_id in content
        assert reverse("fleet:model-edit", args=[model.pk]) in content
    assert "llama · meta · llama3.1" in content  # family, owner, licence
    assert "8.03B" in content
    assert "131,072" in content  # context length
    assert '<span class="muted">fp16</span> 17.5' in content
    assert '<span class="muted">int4</span> 5.5' in content
    assert "$0.10 / $0.20" in content  # per million input / output tokens
    assert '<code class="alias">llama-3.1-8b</code>' in content
    assert response.context["models"][0].deployment_count == 1


def test_it_creates_a_model_with_aliases_and_memory(operator):
    response = operator.post(URL, _model_data())
    assert response.status_code == 302
    assert response.url == URL
    model = CatalogModel.objects.get(model_id="phi-3-mini")
    assert model.memory_gb == {"fp16": 9.0, "int4": 2.75}
    assert model.price_output_per_million == Decimal("0.015")
    assert sorted(model.aliases.values_list("alias", flat=True)) == ["phi-3-mini-4k", "phi3"]
    assert _messages(response) == ["Added “phi-3-mini” to the catalog. Deploy it on the Deployments page."]
    content = operator.get(URL).content.decode()
    assert "$0.05 / $0.015" in content
    assert "3.8B" in content


def test_it_creates_a_model_without_memory(operator):
    response = operator.post(URL, _model_data(memory_fp16="", memory_int4="", aliases=""))
    assert response.status_code == 302
    model = CatalogModel.objects.get(model_id="phi-3-mini")
    assert model.memory_gb == {}
    assert not model.aliases.exists()
    assert "estimated" in operator.get(URL).content.decode()


def test_it_rejects_taken_aliases(operator, catalog):
    response = operator.post(URL, _model_data(aliases="phi3, llama-3.1-8b, mistral-7b-instruct-v0.3, bad alias"))
    assert response.status_code == 400
    errors = response.context["form"].errors["aliases"]
    assert errors == [
        "“bad alias” is not a valid name: letters, digits and . _ : / - only.",
        "“llama-3.1-8b” is already an alias of llama-3.1-8b-instruct.",
        "“mistral-7b-instruct-v0.3” is the id of another model.",
    ]
    assert "The model was not added." in response.content.decode()
    assert not CatalogModel.objects.filter(model_id="phi-3-mini").exists()
    assert not ModelAlias.objects.filter(alias="phi3").exists()


def test_it_rejects_an_id_that_is_an_alias(operator, catalog):
    response = operator.post(URL, _model_data(model_id="llama-3.1-8b"))
    assert response.status_code == 400
    assert response.context["form"].errors["model_id"] == [
        "“llama-3.1-8b” is already an alias of llama-3.1-8b-instruct."
    ]


def test_it_rejects_bad_fields(operator, catalog):
    response = operator.post(
        URL,
        _model_data(model_id="llama-3.1-8b-instruct", memory_fp16="-1", parameters_billion="x"),
    )
    assert response.status_code == 400
    assert set(response.context["form"].errors) == {"model_id", "memory_fp16", "parameters_billion"}
    assert "Model with this Model id already exists." in response.content.decode()


def test_it_edits_a_model(operator, catalog):
    model = CatalogModel.objects.get(model_id="llama-3.1-8b-instruct")
    url = reverse("fleet:model-edit", args=[model.pk])
    response = operator.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert 'value="llama-3.1-8b"' in content  # aliases, comma-separated
    assert 'name="memory_fp16" value="17.5"' in content
    assert 'name="price_input_per_million" value="0.1"' in content  # not 0.1000

    data = _model_data(
        model_id="llama-3.1-8b-instruct",
        family="llama",
        memory_fp16="16",
        memory_int8="9",
        memory_int4="",
        aliases="llama-3.1-8b, llama3",
        price_input_per_million="0.12",
    )
    response = operator.post(url, data)
    assert response.status_code == 302
    model.refresh_from_db()
    assert model.memory_gb == {"fp16": 16.0, "int8": 9.0}
    assert model.price_input_per_million == Decimal("0.12")
    assert sorted(model.aliases.values_list("alias", flat=True)) == ["llama-3.1-8b", "llama3"]
    assert _messages(response) == ["Saved “llama-3.1-8b-instruct”."]

    # Dropping an alias frees it for another model.
    response = operator.post(url, {**data, "aliases": "llama3"})
    assert response.status_code == 302
    assert list(model.aliases.values_list("alias", flat=True)) == ["llama3"]
    assert not ModelAlias.objects.filter(alias="llama-3.1-8b").exists()


def test_it_rejects_another_models_alias_on_edit(operator, catalog):
    model = CatalogModel.objects.get(model_id="llama-3.1-8b-instruct")
    response = operator.post(
        reverse("fleet:model-edit", args=[model.pk]),
        _model_data(model_id=model.model_id, aliases="llama-3.1-8b, mistral-7b, llama-3.1-8b-instruct"),
    )
    assert response.status_code == 400
    assert response.context["form"].errors["aliases"] == [
        "“mistral-7b” is already an alias of mistral-7b-instruct-v0.3.",
    ]
    model.refresh_from_db()
    assert model.family == "llama"


def test_it_rejects_its_own_id_as_alias(operator, catalog):
    model = CatalogModel.objects.get(model_id="llama-3.1-8b-instruct")
    response = operator.post(
        reverse("fleet:model-edit", args=[model.pk]), _model_data(model_id=model.model_id, aliases=model.model_id)
    )
    assert response.status_code == 400
    assert response.context["form"].errors["aliases"] == [
        "“llama-3.1-8b-instruct” is the model's own id: no need for an alias."
    ]


def test_it_refuses_to_delete_a_model_with_deployments(operator, catalog):
    model = catalog[0].model
    url = reverse("fleet:model-delete", args=[model.pk])
    response = operator.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert f"“{model.model_id}” cannot be deleted" in content
    assert catalog[0].name in content
    assert "button-danger" not in content  # nothing to confirm

    response = operator.post(url)
    assert response.status_code == 302
    assert CatalogModel.objects.filter(pk=model.pk).exists()
    assert _messages(response) == [
        f"“{model.model_id}” was not deleted: 1 deployment uses it. Delete it on the Deployments page first."
    ]


def test_it_deletes_a_model_without_deployments(operator, catalog):
    model = catalog[0].model
    Deployment.objects.filter(model=model).delete()
    url = reverse("fleet:model-delete", args=[model.pk])
    response = operator.get(url)
    assert response.status_code == 200
    assert f"Delete “{model.model_id}”?" in response.content.decode()
    assert CatalogModel.objects.filter(pk=model.pk).exists()  # GET only asks

    response = operator.post(url)
    assert response.status_code == 302
    assert response.url == URL
    assert not CatalogModel.objects.filter(pk=model.pk).exists()
    assert not ModelAlias.objects.filter(alias="llama-3.1-8b").exists()
    assert _messages(response) == [f"Deleted “{model.model_id}” and its aliases from the catalog."]


def test_nav_marks_it_current(operator):
    content = operator.get(URL).content.decode()
    assert f'href="{URL}" aria-current="page">Models' in content
    assert f'href="{reverse("fleet:deployments")}">Deployments' in content

import json
from decimal import Decimal

import pytest
from django.urls import reverse

from deployments.fleet import join_token_create, node_register
from deployments.models import CatalogModel, Deployment, JoinToken, Replica, WorkerNode
from deployments.services import deployment_create
from nodeprotocol import VERSION as PROTOCOL

pytestmark = pytest.mark.django_db


@pytest.fixture
def joined(admin_user):
    """A join token and a node that joined with it, with their plaintext credentials."""
    token, token_plaintext = join_token_create(name="rack 3", created_by=admin_user)
    gpus = [{"index": 0, "name": "A100-80GB", "memory_total_mb": 81920}]
    node, credential = node_register(
        token=token_plaintext,
        name="gpu-box",
        host="rack3.example.net",
        engine="simulated",
        slots=8,
        gpus=gpus,
        protocol=PROTOCOL,
    )
    return token, token_plaintext, node, credential


def _pages(token: JoinToken, node: WorkerNode) -> list[str]:
    return [
        reverse("admin:deployments_jointoken_changelist"),
        reverse("admin:deployments_jointoken_change", args=[token.pk]),
        reverse("admin:deployments_workernode_changelist"),
        reverse("admin:deployments_workernode_change", args=[node.pk]),
    ]


def test_it_works(admin_client, joined):
    token, _, node, _ = joined
    for url in _pages(token, node):
        assert admin_client.get(url).status_code == 200, url


def test_it_never_shows_hashes_or_secrets(admin_client, joined):
    token, token_plaintext, node, credential = joined
    for url in _pages(token, node):
        content = admin_client.get(url).content.decode()
        for secret in (token.hashed_token, node.hashed_credential, token_plaintext, credential):
            assert secret not in content, url


def test_it_shows_prefixes_and_status(admin_client, joined):
    token, _, node, _ = joined
    content = admin_client.get(reverse("admin:deployments_jointoken_changelist")).content.decode()
    assert f"gpcj_{token.prefix}…" in content
    content = admin_client.get(reverse("admin:deployments_workernode_change", args=[node.pk])).content.decode()
    assert f"gpcn_{node.credential_prefix}…" in content
    assert "Offline" in content  # registered, never heartbeated


def test_it_has_no_add_pages(admin_client):
    assert admin_client.get(reverse("admin:deployments_jointoken_add")).status_code == 403
    assert admin_client.get(reverse("admin:deployments_workernode_add")).status_code == 403


def test_it_keeps_nodes_read_only(admin_client, joined):
    _, _, node, _ = joined
    url = reverse("admin:deployments_workernode_change", args=[node.pk])
    admin_client.post(url, {"name": "renamed", "slots": "1"})
    node.refresh_from_db()
    assert node.name.startswith("gpu-box-")
    assert node.slots == 8


def test_revoke_token_action(admin_client, joined):
    token, _, _, _ = joined
    response = admin_client.post(
        reverse("admin:deployments_jointoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 join token(s)." in response.content.decode()
    token.refresh_from_db()
    assert not token.is_active


def test_revoke_credential_action(admin_client, joined):
    _, _, node, _ = joined
    response = admin_client.post(
        reverse("admin:deployments_workernode_changelist"),
        {"action": "revoke_credential", "_selected_action": [node.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked the credential of 1 node(s)." in response.content.decode()
    node.refresh_from_db()
    assert node.credential_revoked_at is not None


def test_it_keeps_deployment_admin(admin_client, catalog):
    deployment = catalog[0]
    assert (
        admin_client.get(reverse("admin:deployments_catalogmodel_change", args=[deployment.model.pk])).status_code
        == 200
    )
    assert admin_client.get(reverse("admin:deployments_deployment_change", args=[deployment.pk])).status_code == 200


def test_it_requires_staff(client, user):
    client.force_login(user)
    assert client.get(reverse("admin:deployments_workernode_changelist")).status_code == 302


def _deployment_change_data(deployment, **fields) -> dict:
    """The change form as the admin renders it: the editable fields and the replicas inline's management form."""
    replicas = list(deployment.replica_set.all())
    data = {
        "engine_config": "{}",
        "precision": deployment.precision,
        "gpu_profile": deployment.gpu_profile,
        "placement": deployment.placement,
        "replicas": str(deployment.replicas),
        "replica_set-TOTAL_FORMS": str(len(replicas)),
        "replica_set-INITIAL_FORMS": str(len(replicas)),
        "replica_set-MIN_NUM_FORMS": "0",
        "replica_set-MAX_NUM_FORMS": "1000",
    }
    for i, replica in enumerate(replicas):
        data[f"replica_set-{i}-id"] = str(replica.pk)
        data[f"replica_set-{i}-deployment"] = str(deployment.pk)
    return {**data, **fields}


def test_it_lists_replicas_read_only(admin_client, catalog):
    replica = Replica.objects.select_related("deployment", "node").get(deployment=catalog[0])
    Replica.objects.filter(pk=replica.pk).update(state=Replica.State.FAILED, reason="CUDA out of memory")
    content = admin_client.get(reverse("admin:deployments_replica_changelist")).content.decode()
    assert replica.deployment.name in content
    assert "unit-node-1" in content
    assert "CUDA out of memory" in content
    assert "Failed" in content
    url = reverse("admin:deployments_replica_change", args=[replica.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert "CUDA out of memory" in response.content.decode()
    assert admin_client.get(reverse("admin:deployments_replica_add")).status_code == 403
    admin_client.post(url, {"state": "running", "reason": ""})
    replica.refresh_from_db()
    assert replica.state == Replica.State.FAILED


def test_it_places_again_a_deleted_replica(admin_client, catalog):
    replica = Replica.objects.get(deployment=catalog[0])
    response = admin_client.post(reverse("admin:deployments_replica_delete", args=[replica.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Replica.objects.filter(pk=replica.pk).exists()
    assert Replica.objects.filter(deployment=catalog[0]).count() == 1  # placed again at once


def test_deployment_change_page_shows_status_and_replicas(admin_client, catalog):
    deployment = catalog[0]
    Deployment.objects.filter(pk=deployment.pk).update(status_reason="1 of 1 replicas loaded <ok>")
    content = admin_client.get(reverse("admin:deployments_deployment_change", args=[deployment.pk])).content.decode()
    assert "Running" in content
    assert "1 of 1 replicas loaded &lt;ok&gt;" in content
    assert "unit-node-1" in content  # the replicas inline
    content = admin_client.get(reverse("admin:deployments_deployment_changelist")).content.decode()
    assert "1 of 1 replicas loaded &lt;ok&gt;" in content


def test_saving_a_deployment_in_admin_places_it(admin_client, catalog):
    deployment = catalog[0]  # llama at fp16; a second replica does not fit
    url = reverse("admin:deployments_deployment_change", args=[deployment.pk])
    response = admin_client.post(url, _deployment_change_data(deployment, replicas="2", status="stopped"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    deployment.refresh_from_db()
    assert deployment.replicas == 2
    assert deployment.status == Deployment.Status.SCHEDULING  # placement's word, not the form's
    assert "no online 'simulated' node has 17.5 GB" in deployment.status_reason

    # A new precision reloads the replicas, as through the API.
    response = admin_client.post(url, _deployment_change_data(deployment, replicas="1", precision="int8"))
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.replica_set.get().memory_gb == 9.5
    assert deployment.status == Deployment.Status.STARTING


def test_adding_a_deployment_in_admin_places_it(admin_client, catalog):
    model = CatalogModel.objects.create(
        model_id="tiny-1b", family="tiny", parameters_billion=Decimal("1.1"), memory_gb={"fp16": 2.5}
    )
    data = {
        "name": "tiny",
        "model": str(model.pk),
        "engine": "simulated",
        "engine_config": "{}",
        "precision": "fp16",
        "gpu_profile": "",
        "placement": "binpack",
        "replicas": "1",
        "replica_set-TOTAL_FORMS": "0",
        "replica_set-INITIAL_FORMS": "0",
        "replica_set-MIN_NUM_FORMS": "0",
        "replica_set-MAX_NUM_FORMS": "1000",
    }
    response = admin_client.post(reverse("admin:deployments_deployment_add"), data)
    assert response.status_code == 302
    deployment = Deployment.objects.get(name="tiny")
    assert deployment.status == Deployment.Status.STARTING
    assert deployment.replica_set.get().node.name == "unit-node-1"


def test_it_keeps_name_model_and_engine_of_a_deployment(admin_client, catalog):
    deployment = catalog[0]
    url = reverse("admin:deployments_deployment_change", args=[deployment.pk])
    other = catalog[1].model
    admin_client.post(url, _deployment_change_data(deployment, name="renamed", model=str(other.pk), engine="hf"))
    deployment.refresh_from_db()
    assert (deployment.name, deployment.model_id, deployment.engine) == (
        catalog[0].name,
        catalog[0].model_id,
        "simulated",
    )


def test_deleting_a_deployment_in_admin_frees_its_gpus(admin_client, catalog):
    waiting = deployment_create(
        name="waiting", model=CatalogModel.objects.get(model_id="mistral-7b-instruct-v0.3"), precision="int4"
    )
    assert waiting.status == Deployment.Status.SCHEDULING  # 5 GB needed, 4.5 GB free
    deployment = catalog[0]
    response = admin_client.post(reverse("admin:deployments_deployment_delete", args=[deployment.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    waiting.refresh_from_db()
    assert waiting.status == Deployment.Status.STARTING  # placed in the memory it freed


def test_stop_and_start_actions(admin_client, catalog):
    deployment = catalog[0]
    url = reverse("admin:deployments_deployment_changelist")
    response = admin_client.post(url, {"action": "stop", "_selected_action": [deployment.pk]}, follow=True)
    assert "Stopped 1 deployment(s)." in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.STOPPED
    assert not deployment.replica_set.exists()
    response = admin_client.post(url, {"action": "start", "_selected_action": [deployment.pk]}, follow=True)
    assert "Started 1 deployment(s)." in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.STARTING


# --- Every admin write goes through deployments.services --------------------------------------------


def _add_data(model, **fields) -> dict:
    return {
        "name": "tiny",
        "model": str(model.pk),
        "engine": "simulated",
        "engine_config": "{}",
        "precision": "fp16",
        "gpu_profile": "",
        "placement": "binpack",
        "replicas": "1",
        "replica_set-TOTAL_FORMS": "0",
        "replica_set-INITIAL_FORMS": "0",
        "replica_set-MIN_NUM_FORMS": "0",
        "replica_set-MAX_NUM_FORMS": "1000",
        **fields,
    }


def test_adding_a_deployment_in_admin_goes_through_the_service(admin_client, catalog, monkeypatch):
    from deployments import services

    model = CatalogModel.objects.create(model_id="tiny-1b", family="tiny", parameters_billion=1, memory_gb={"fp16": 2})
    calls = []
    original = services.deployment_create
    monkeypatch.setattr(services, "deployment_create", lambda **kw: calls.append(kw) or original(**kw))

    response = admin_client.post(reverse("admin:deployments_deployment_add"), _add_data(model))

    assert response.status_code == 302
    assert [c["name"] for c in calls] == ["tiny"]
    assert Deployment.objects.get(name="tiny").replica_set.exists()  # placed by the service


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"replicas": "65"}, "replicas", "At most 64 replicas."),
        ({"engine_config": '{"api_key": "sk-1"}'}, "engine_config", "api_key_env"),
        ({"engine_config": "[1]"}, "engine_config", "JSON object"),
    ],
)
def test_the_admin_shows_what_the_service_refuses(admin_client, catalog, fields, field, message):
    model = catalog[0].model
    response = admin_client.post(reverse("admin:deployments_deployment_add"), _add_data(model, **fields))

    assert response.status_code == 200  # the form again, with the error: not a 500
    assert message in str(response.context["adminform"].form.errors[field])
    assert not Deployment.objects.filter(name="tiny").exists()

    url = reverse("admin:deployments_deployment_change", args=[catalog[0].pk])
    response = admin_client.post(url, _deployment_change_data(catalog[0], **fields))
    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors[field])


def _model_change_data(model, deployment, **deployment_fields) -> dict:
    """The catalog model's change form, with its aliases and deployments inlines."""
    data = {
        "model_id": model.model_id,
        "family": model.family,
        "parameters_billion": str(model.parameters_billion),
        "context_length": str(model.context_length),
        "licence": model.licence,
        "owned_by": model.owned_by,
        "price_input_per_million": str(model.price_input_per_million),
        "price_output_per_million": str(model.price_output_per_million),
        "default_engine": model.default_engine,
        "task": model.task,
        "memory_gb": json.dumps(model.memory_gb),
        "aliases-TOTAL_FORMS": "0",
        "aliases-INITIAL_FORMS": "0",
        "aliases-MIN_NUM_FORMS": "0",
        "aliases-MAX_NUM_FORMS": "1000",
        "deployments-TOTAL_FORMS": "1",
        "deployments-INITIAL_FORMS": "1",
        "deployments-MIN_NUM_FORMS": "0",
        "deployments-MAX_NUM_FORMS": "1000",
        "deployments-0-id": str(deployment.pk),
        "deployments-0-model": str(model.pk),
        "deployments-0-gpu_profile": deployment.gpu_profile,
        "deployments-0-replicas": str(deployment.replicas),
    }
    data.update({f"deployments-0-{name}": value for name, value in deployment_fields.items()})
    return data


def test_the_deployments_inline_scales_through_the_service(admin_client, catalog, monkeypatch):
    from deployments import services

    deployment = catalog[0]
    calls = []
    original = services.deployment_update
    monkeypatch.setattr(services, "deployment_update", lambda **kw: calls.append(kw) or original(**kw))
    url = reverse("admin:deployments_catalogmodel_change", args=[deployment.model.pk])

    response = admin_client.post(
        url, _model_change_data(deployment.model, deployment, replicas="2", name="renamed", engine="hf")
    )

    assert response.status_code == 302, response.context["inline_admin_formsets"][1].formset.errors
    assert [(c["deployment"].pk, c["replicas"]) for c in calls] == [(deployment.pk, 2)]
    deployment.refresh_from_db()
    assert (deployment.name, deployment.engine, deployment.replicas) == (catalog[0].name, "simulated", 2)
    assert deployment.status == Deployment.Status.SCHEDULING  # placed by the service


def test_the_deployments_inline_refuses_what_the_service_refuses(admin_client, catalog):
    deployment = catalog[0]
    url = reverse("admin:deployments_catalogmodel_change", args=[deployment.model.pk])

    response = admin_client.post(url, _model_change_data(deployment.model, deployment, replicas="65"))

    assert response.status_code == 200
    deployment.refresh_from_db()
    assert deployment.replicas == 1

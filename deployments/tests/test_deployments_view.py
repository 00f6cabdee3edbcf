from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils.html import escape

from deployments.models import CatalogModel, Deployment, Replica
from deployments.services import deployment_create, deployment_stop

pytestmark = pytest.mark.django_db

URL = reverse("fleet:deployments")


@pytest.fixture
def tiny(catalog):
    """A model small enough for what the demo catalog leaves free on the fixture's node (4.5 GB)."""
    return CatalogModel.objects.create(
        model_id="tiny-1b", family="tiny", parameters_billion=Decimal("1.10"), memory_gb={"fp16": 2.5, "int4": 1.0}
    )


@pytest.fixture
def operator(client, staff):
    client.force_login(staff)
    return client


def _create(client, **fields):
    data = {
        "name": "tiny",
        "model": "tiny-1b",
        "engine": "",
        "engine_config": "",
        "precision": "fp16",
        "gpu_profile": "",
        "placement": "binpack",
        "replicas": "1",
        **fields,
    }
    return client.post(URL, data)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _url(name: str, deployment: Deployment) -> str:
    return reverse(f"fleet:deployment-{name}", args=[deployment.name])


def test_it_requires_login(client, catalog):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={URL}"
    response = client.post(_url("stop", catalog[0]))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert Deployment.objects.get(pk=catalog[0].pk).status == Deployment.Status.RUNNING


def test_it_rejects_outsider(client, user, tiny, catalog):
    client.force_login(user)
    assert client.get(URL).status_code == 403
    assert _create(client).status_code == 403
    assert not Deployment.objects.filter(name="tiny").exists()
    deployment = catalog[0]
    for name in ("scale", "stop", "start", "delete", "edit"):
        assert client.post(_url(name, deployment), {"replicas": "3"}).status_code == 403, name
    deployment.refresh_from_db()
    assert deployment.replicas == 1 and deployment.status == Deployment.Status.RUNNING


def test_it_works(operator, catalog):
    response = operator.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    for deployment in catalog:
        assert f'id="deployment-{deployment.name}" data-status="running"' in content
        assert f'<div class="muted small">{deployment.model.model_id}</div>' in content
    assert '<span class="state state-running">running</span>' in content
    assert "1 / 1" in content
    assert "17.5 GB" in content  # llama at fp16
    assert "42 GB" in content  # qwen at int4
    # Each replica: its node, GPUs and state.
    assert '<span class="replica-node">unit-node-1</span>' in content
    assert "GPU 0 · 17.5 GB" in content
    assert '<span class="state state-running">running</span>' in content
    # The actions of a running deployment.
    for name in ("scale", "stop", "edit", "delete"):
        assert _url(name, catalog[0]) in content
    assert _url("start", catalog[0]) not in content
    # The create form offers the catalog.
    assert '<option value="qwen2.5-72b-instruct">' in content


def test_it_shows_status_and_reason(operator, catalog):
    big = deployment_create(
        name="big", model=CatalogModel.objects.get(model_id="qwen2.5-72b-instruct"), precision="fp16"
    )
    assert big.status == Deployment.Status.SCHEDULING
    failed = catalog[1]
    Replica.objects.filter(deployment=failed).update(state=Replica.State.FAILED, reason="CUDA out of memory <oops>")
    Deployment.objects.filter(pk=failed.pk).update(
        status=Deployment.Status.FAILED, status_reason="Replica on unit-node-1 failed: CUDA out of memory <oops>"
    )
    content = operator.get(URL).content.decode()
    assert '<span class="state state-scheduling">scheduling</span>' in content
    assert f'<p class="status-reason status-reason-scheduling">{escape(big.status_reason)}</p>' in content
    assert "150 GB of free GPU memory for qwen2.5-72b-instruct at fp16" in content
    assert "1 replica waiting for a node with room" in content
    assert '<span class="state state-failed">failed</span>' in content
    assert "CUDA out of memory &lt;oops&gt;" in content
    assert "<oops>" not in content
    assert '<span class="replica-reason">CUDA out of memory &lt;oops&gt;</span>' in content


def test_it_creates_and_places(operator, tiny):
    response = _create(operator)
    assert response.status_code == 302
    assert response.url == URL
    deployment = Deployment.objects.get(name="tiny")
    assert deployment.model == tiny
    assert deployment.engine == "simulated"  # the model's default engine
    assert deployment.status == Deployment.Status.STARTING
    replica = deployment.replica_set.get()
    assert replica.node.name == "unit-node-1"
    assert replica.gpu_indices == [0]
    assert replica.memory_gb == 2.5
    assert _messages(response) == ["Created “tiny”. 1 replica placed on unit-node-1."]


def test_it_creates_with_every_setting(operator, tiny):
    response = _create(
        operator,
        engine="openai",
        engine_config='{"base_url": "http://127.0.0.1:8001/v1", "model": "tiny"}',
        precision="int4",
        gpu_profile="H100-80GB",
        placement="spread",
        replicas="2",
    )
    assert response.status_code == 302
    deployment = Deployment.objects.get(name="tiny")
    assert deployment.engine == "openai"
    assert deployment.engine_config == {"base_url": "http://127.0.0.1:8001/v1", "model": "tiny"}
    assert (deployment.precision, deployment.gpu_profile, deployment.placement) == ("int4", "H100-80GB", "spread")
    assert deployment.replicas == 2
    # No "openai" node in the fleet: it waits, and says why.
    assert deployment.status == Deployment.Status.SCHEDULING
    assert "no online 'openai' node" in deployment.status_reason
    assert _messages(response) == [f"Created “tiny”. It is waiting for GPUs: {deployment.status_reason}"]


def test_it_shows_scheduling_when_nothing_fits(operator, catalog):
    response = _create(operator, name="qwen-fp16", model="qwen2.5-72b-instruct", precision="fp16")
    assert response.status_code == 302
    deployment = Deployment.objects.get(name="qwen-fp16")
    assert deployment.status == Deployment.Status.SCHEDULING
    assert not deployment.replica_set.exists()
    assert "150 GB of free GPU memory" in deployment.status_reason
    [message] = get_messages(response.wsgi_request)
    assert message.level_tag == "warning"
    assert deployment.status_reason in message.message
    content = operator.get(URL).content.decode()
    assert escape(deployment.status_reason) in content


@pytest.mark.parametrize(
    ("engine_config", "error"),
    [
        ("{not json", "This is not valid JSON"),
        ('["a", "list"]', "Engine settings must be a JSON object"),
        ("42", "Engine settings must be a JSON object"),
    ],
)
def test_it_rejects_bad_engine_settings(operator, tiny, engine_config, error):
    response = _create(operator, engine_config=engine_config)
    assert response.status_code == 400
    content = response.content.decode()
    assert error in content
    assert "The deployment was not created." in content
    assert escape(engine_config) in content  # what was typed is kept for fixing
    assert not Deployment.objects.filter(name="tiny").exists()


def test_it_shows_service_errors_on_the_form(operator, tiny, catalog):
    response = _create(operator, name=catalog[0].name)
    assert response.status_code == 400
    assert "Deployment with this Name already exists." in response.content.decode()
    assert Deployment.objects.filter(name=catalog[0].name).count() == 1


def test_it_validates_the_form(operator, tiny):
    response = _create(operator, name="not a slug!", model="no-such-model", replicas="0")
    assert response.status_code == 400
    form = response.context["form"]
    assert set(form.errors) == {"name", "model", "replicas"}
    assert not Deployment.objects.filter(model=tiny).exists()


def test_it_scales(operator, catalog):
    deployment = catalog[0]  # llama at fp16: a second replica does not fit beside the others
    response = operator.post(_url("scale", deployment), {f"{deployment.name}-replicas": "2"})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.replicas == 2
    assert deployment.status == Deployment.Status.SCHEDULING
    assert deployment.replica_set.count() == 1
    assert _messages(response) == [
        f"Scaled “{deployment.name}” to 2 replicas. It is waiting for GPUs: {deployment.status_reason}"
    ]
    response = operator.post(_url("scale", deployment), {f"{deployment.name}-replicas": "1"})
    deployment.refresh_from_db()
    assert deployment.replicas == 1
    assert deployment.status == Deployment.Status.RUNNING
    assert _messages(response)[-1] == f"Scaled “{deployment.name}” to 1 replica. 1 replica placed on unit-node-1."


def test_it_rejects_a_bad_scale(operator, catalog):
    deployment = catalog[0]
    response = operator.post(_url("scale", deployment), {f"{deployment.name}-replicas": "-1"})
    assert response.status_code == 400
    content = response.content.decode()
    assert "The deployment was not scaled." in content
    assert "At least 0." in content
    assert 'class="scale-form field-invalid"' in content
    deployment.refresh_from_db()
    assert deployment.replicas == 1


def test_it_requires_post(operator, catalog):
    deployment = catalog[0]
    for name in ("scale", "stop", "start"):
        assert operator.get(_url(name, deployment)).status_code == 405, name
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.RUNNING


def test_it_stops_and_starts(operator, catalog):
    deployment = catalog[0]
    response = operator.post(_url("stop", deployment))
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.STOPPED
    assert not deployment.replica_set.exists()
    assert _messages(response) == [
        f"Stopped “{deployment.name}”: its replicas were removed and their GPU memory is free."
    ]
    content = operator.get(URL).content.decode()
    assert f'id="deployment-{deployment.name}" data-status="stopped"' in content
    assert _url("start", deployment) in content

    response = operator.post(_url("start", deployment))
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.STARTING
    assert deployment.replica_set.get().node.name == "unit-node-1"
    assert _messages(response)[-1] == f"Started “{deployment.name}”. 1 replica placed on unit-node-1."


def test_it_starts_only_stopped_deployments(operator, catalog):
    deployment = catalog[0]
    response = operator.post(_url("start", deployment))
    assert _messages(response) == [f"“{deployment.name}” is not stopped: nothing to start."]
    deployment_stop(deployment=deployment)
    response = operator.post(_url("stop", deployment))
    assert _messages(response)[-1] == f"“{deployment.name}” is already stopped."


def test_it_deletes_after_confirmation(operator, catalog):
    deployment = catalog[0]
    url = _url("delete", deployment)
    response = operator.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert f"Delete “{deployment.name}”?" in content
    assert '<form method="post" class="actions">' in content
    assert Deployment.objects.filter(pk=deployment.pk).exists()  # GET only asks

    response = operator.post(url)
    assert response.status_code == 302
    assert response.url == URL
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    assert not Replica.objects.filter(deployment_id=deployment.pk).exists()
    assert _messages(response) == [f"Deleted “{deployment.name}”. Its nodes stop serving it at their next heartbeat."]


def test_it_edits_settings(operator, catalog):
    deployment = catalog[0]
    url = _url("edit", deployment)
    response = operator.get(url)
    assert response.status_code == 200
    assert response.context["form"].initial["precision"] == "fp16"
    response = operator.post(
        url,
        {
            "replicas": "1",
            "engine_config": '{"seed": 1}',
            "precision": "int8",
            "gpu_profile": "",
            "placement": "spread",
        },
    )
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert (deployment.precision, deployment.placement, deployment.engine_config) == ("int8", "spread", {"seed": 1})
    # A new precision reloads the replica with its memory need.
    assert deployment.replica_set.get().memory_gb == 9.5
    assert deployment.status == Deployment.Status.STARTING


def test_it_rejects_bad_settings_on_edit(operator, catalog):
    deployment = catalog[0]
    response = operator.post(
        _url("edit", deployment),
        {"replicas": "1", "engine_config": "[]", "precision": "int8", "gpu_profile": "", "placement": "binpack"},
    )
    assert response.status_code == 400
    assert "Engine settings must be a JSON object" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.precision == "fp16"


def test_it_404s_for_unknown_deployments(operator, catalog):
    assert operator.post(reverse("fleet:deployment-stop", args=["nope"])).status_code == 404


def test_it_shows_an_empty_list(operator):
    content = operator.get(URL).content.decode()
    assert "There are no deployments." in content
    assert "The catalog is empty." in content


def test_nav_links_to_it_for_staff_only(client, staff, user):
    client.force_login(user)
    content = client.get(reverse("dashboard:keys")).content.decode()
    assert f'href="{URL}"' not in content
    assert f'href="{reverse("fleet:models")}"' not in content
    client.force_login(staff)
    content = client.get(URL).content.decode()
    assert f'href="{URL}" aria-current="page">Deployments' in content
    assert f'href="{reverse("fleet:fleet")}">Fleet' in content  # not marked current here
    assert f'href="{reverse("fleet:models")}">Models' in content

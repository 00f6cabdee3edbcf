"""Autoscaling with real node processes: under load a deployment gains a replica on a second node,
which serves part of the load, and loses it again once quiet."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from decimal import Decimal

import httpx
import pytest

from conftest import BASE_DIR, _free_port, long_seeds, wait_for
from deployments.models import CatalogModel, Deployment, Replica
from deployments.services import deployment_create, deployment_delete
from gpucloud import daphne
from inference.models import UsageRecord

pytestmark = pytest.mark.live

MODEL = "autoscale-live-72b"
MESSAGES = [{"role": "user", "content": "Tell me about GPUs."}]


@pytest.fixture
def quick_platform(fleet):
    """The session's platform with a web process of its own whose autoscaling is quick: the test's
    nodes connect to it, so it is the one that runs the periodic work."""
    port = _free_port()
    env = {
        **fleet.env,
        "PERIODIC_INTERVAL": "0.5",
        "AUTOSCALE_QUEUE_WAIT_TARGET": "0.5",
        "AUTOSCALE_QUIET_SECONDS": "3",
    }
    web = subprocess.Popen(daphne.command("127.0.0.1", port), env=env, cwd=BASE_DIR)
    # Shares the fleet's list of worker processes, so the fleet fixture stops them afterwards.
    platform = dataclasses.replace(fleet, url=f"http://127.0.0.1:{port}", daphne=web)

    def up():
        try:
            return httpx.get(f"{platform.url}/health", timeout=2).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, message="the quick web process")
    model = CatalogModel.objects.create(
        model_id=MODEL,
        family="test",
        parameters_billion=Decimal("72"),
        memory_gb={"fp16": 30},
        price_input_per_million=Decimal("0.1"),
        price_output_per_million=Decimal("0.1"),
    )
    try:
        yield platform
    finally:
        for deployment in Deployment.objects.filter(model=model):
            deployment_delete(deployment=deployment)
        model.delete()
        fleet.stop(web)


def test_a_second_node_takes_replicas_under_load_and_gives_them_back_when_quiet(quick_platform, make_key):
    platform = quick_platform
    _, key = make_key(platform.user, rpm=1000)
    # Two GPUs each: the demo's replicas and this one fit on the first node.
    platform.start_worker("alpha", "--slots=1", "--gpus=A100-80GB,A100-80GB")
    alpha = platform.wait_online("alpha")
    deployment = deployment_create(
        name="autoscale-live", model=CatalogModel.objects.get(model_id=MODEL), gpu_profile="H100-80GB",
        min_replicas=1, max_replicas=2,
    )  # fmt: skip
    assert [r.node_id for r in deployment.replica_set.all()] == [alpha.pk]
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).status == "running", timeout=30, message="it to run")
    platform.start_worker("beta", "--slots=1", "--gpus=A100-80GB,A100-80GB")
    beta = platform.wait_online("beta")
    assert not Replica.objects.filter(deployment=deployment, node=beta).exists()

    # Four requests of several seconds each on a node with one slot: three wait.
    request_ids: list[str] = []
    statuses: list[int] = []

    def call(seed: int) -> None:
        response = httpx.post(
            f"{platform.url}/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "seed": seed, "max_tokens": 40},
            headers={"Authorization": f"Bearer {key}"},
            timeout=90,
        )
        statuses.append(response.status_code)
        request_ids.append(response.headers["x-request-id"])

    calls = [threading.Thread(target=call, args=(seed,)) for seed in long_seeds(MODEL, MESSAGES, count=4)]
    for thread in calls:
        thread.start()
    wait_for(
        lambda: Replica.objects.filter(deployment=deployment, node=beta, state="running").exists(),
        timeout=30,
        message="a replica on the second node",
    )
    assert Deployment.objects.get(pk=deployment.pk).replicas == 2
    for thread in calls:
        thread.join(timeout=90)
    assert statuses == [200] * 4
    workers = set(UsageRecord.objects.filter(request_id__in=request_ids).values_list("worker", flat=True))
    assert workers == {alpha.name, beta.name}  # the second node served part of the load

    # Quiet: after AUTOSCALE_QUIET_SECONDS it is back to its minimum, and stays there.
    wait_for(
        lambda: (
            Deployment.objects.get(pk=deployment.pk).replicas == 1
            and Replica.objects.filter(deployment=deployment).count() == 1
        ),
        timeout=30,
        message="the extra replica to go",
    )
    threading.Event().wait(4)
    assert Deployment.objects.get(pk=deployment.pk).replicas == 1
    assert (
        httpx.post(
            f"{platform.url}/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "max_tokens": 5},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ).status_code
        == 200
    )

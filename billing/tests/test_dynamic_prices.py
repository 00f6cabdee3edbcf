"""Supply and demand: a model's price multiplier moves with utilisation, as price versions, shown on
the Models & pricing page and in /v1/models, and a request pays the version it was admitted at."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import admission, pricing, services
from billing.models import DynamicPrice, PriceVersion
from billing.selectors import price_in_force
from deployments.models import Deployment, WorkerNode
from gpucloud.redis_client import get_redis

D = Decimal


# --- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "expected"),
    [(0.0, "0.8"), (0.5, "0.8"), (0.75, "1.4"), (1.0, "2.0"), (3.0, "2.0"), (0.6, "1.05")],
)
def test_the_multiplier_runs_from_floor_to_ceiling_above_the_target(mean, expected):
    assert pricing.multiplier_for(mean, floor=D("0.8"), ceiling=D("2.0"), target=0.5, step=D("0.05")) == D(expected)


def test_it_moves_in_steps_and_stays_in_bounds():
    assert pricing.multiplier_for(0.61, floor=D("1"), ceiling=D("1.5"), target=0.5, step=D("0.1")) == D("1.1")
    assert pricing.multiplier_for(0.99, floor=D("1"), ceiling=D("1.33"), target=0.5, step=D("0.25")) == D("1.25")
    assert pricing.multiplier_for(1.0, floor=D("1"), ceiling=D("1.33"), target=0.5, step=D("0.25")) == D("1.33")


def test_utilisation_is_demand_over_slots():
    assert pricing.utilisation(waiting=4, busy=8, slots=8) == 1.5
    assert pricing.utilisation(waiting=0, busy=2, slots=8) == 0.25
    assert pricing.utilisation(waiting=3, busy=0, slots=0) is None


# --- price versions ---------------------------------------------------------------------------


@pytest.fixture
def samples():
    def clear():
        redis = get_redis()
        for key in redis.scan_iter(match="gpucloud:utilisation:*"):
            redis.delete(key)

    clear()
    yield
    clear()


@pytest.fixture
def llama(catalog, samples):
    """The demo's llama, floating between 0.8x and 2x, served by the fixture's node (8 slots)."""
    deployment = Deployment.objects.get(model__model_id="llama-3.1-8b-instruct")
    DynamicPrice.objects.create(model=deployment.model, floor=D("0.8"), ceiling=D("2.0"))
    return deployment


def _load(deployment, *, busy: int, waiting_jobs: int = 0) -> None:
    WorkerNode.objects.update(
        slots=8, telemetry={"queues": [deployment.queue_name], "busy": {deployment.queue_name: busy}}
    )


@pytest.mark.django_db
def test_a_busy_model_gets_dearer_and_an_idle_one_cheaper_as_new_price_versions(llama, settings):
    settings.PRICING_INTERVAL, settings.PRICING_WINDOW_SECONDS, settings.PRICING_TARGET_UTILISATION = 60, 300, 0.5
    start = timezone.now()
    base = price_in_force(llama.model)
    assert base.multiplier == 1

    _load(llama, busy=8)  # every slot busy
    assert pricing.sample_utilisation(now=start) == {llama.model_id: 1.0}
    [dearer] = pricing.reprice(now=start)
    assert (dearer.multiplier, dearer.price_input_per_million, dearer.price_output_per_million) == (
        D("2.000"), D("0.2000"), D("0.4000"),
    )  # fmt: skip
    assert price_in_force(llama.model) == dearer
    assert PriceVersion.objects.get(pk=base.pk).multiplier == 1  # the past is kept

    _load(llama, busy=0)
    later = start + timedelta(seconds=30)
    pricing.sample_utilisation(now=later)
    assert pricing.reprice(now=later) == []  # at most once per PRICING_INTERVAL

    idle = start + timedelta(seconds=400)  # the busy sample has left the window
    pricing.sample_utilisation(now=idle)
    [cheaper] = pricing.reprice(now=idle)
    assert (cheaper.multiplier, cheaper.price_input_per_million) == (D("0.800"), D("0.0800"))
    pricing.sample_utilisation(now=idle + timedelta(seconds=70))
    assert pricing.reprice(now=idle + timedelta(seconds=70)) == []  # unchanged: no new version


@pytest.mark.django_db
def test_a_model_without_capacity_keeps_its_price(llama):
    WorkerNode.objects.update(telemetry={})
    assert pricing.sample_utilisation() == {}
    assert pricing.reprice() == []


@pytest.mark.django_db
def test_a_catalog_price_change_keeps_the_multiplier_and_turning_it_off_restores_the_catalog_price(llama):
    services.price_version_record(llama.model, D("1.5"))
    llama.model.price_input_per_million = D("0.20")
    llama.model.save()  # the billing signal records a version
    version = price_in_force(llama.model)
    assert (version.multiplier, version.price_input_per_million) == (D("1.500"), D("0.3000"))

    DynamicPrice.objects.filter(model=llama.model).update(floor=D("1"), ceiling=D("1.2"))
    assert services.price_version_record(llama.model).multiplier == D("1.200")  # within the new bounds

    DynamicPrice.objects.filter(model=llama.model).update(enabled=False)
    [restored] = pricing.reprice()
    assert (restored.multiplier, restored.price_input_per_million) == (D("1.000"), D("0.2000"))


@pytest.mark.django_db(transaction=True)
def test_a_request_pays_the_price_in_force_when_it_was_admitted(llama, user, make_key, settings):
    settings.PRICING_INTERVAL = 0
    api_key, _ = make_key(user)
    before = admission.admit(api_key, llama.model, request_id="req_before", prompt_tokens=1000, max_tokens=1000)
    _load(llama, busy=8)
    pricing.sample_utilisation()
    [dearer] = pricing.reprice()
    after = admission.admit(api_key, llama.model, request_id="req_after", prompt_tokens=1000, max_tokens=1000)
    assert after.price_version_id == dearer.pk != before.price_version_id

    usage = {"endpoint": "chat.completions", "status_code": 200}
    first = admission.settle(before, prompt_tokens=1000, completion_tokens=1000, **usage)
    second = admission.settle(after, prompt_tokens=1000, completion_tokens=1000, **usage)
    assert first.cost == D("0.0003")  # 1000 x $0.10/M + 1000 x $0.20/M
    assert second.cost == D("0.0006")  # at 2x


# --- who sees it ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_v1_models_and_the_pricing_page_show_the_multiplier(client, user, make_key, llama):
    services.price_version_record(llama.model, D("1.25"))
    _, key = make_key(user)
    data = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").json()["data"]
    pricing_of = {m["id"]: m["pricing"] for m in data}
    assert pricing_of["llama-3.1-8b-instruct"] == {
        "input_per_million": 0.125, "output_per_million": 0.25, "multiplier": 1.25,
    }  # fmt: skip
    assert pricing_of["mistral-7b-instruct-v0.3"]["multiplier"] == 1.0
    detail = client.get("/v1/models/llama-3.1-8b", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert detail["pricing"]["multiplier"] == 1.25

    client.force_login(user)
    page = client.get("/pricing/").content.decode()
    assert 'data-multiplier="1.250"' in page
    assert "\u00d71.25" in page and "(0.8\u20132)" in page

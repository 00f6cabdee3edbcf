"""Host earnings, credited when a request is settled: in the charge's transaction, once per
request id, split between the nodes that produced a request that failed over."""

from decimal import Decimal

import pytest
from django.utils import timezone

from billing import admission
from billing.admission import Reservation
from billing.models import LedgerEntry
from billing.services import price_version_record
from deployments.models import CatalogModel, Trust, WorkerNode
from inference.models import UsageRecord
from marketplace import services
from marketplace.models import EarningEntry
from marketplace.selectors import host_balances, host_earnings
from marketplace.services import charge_split, host_become

pytestmark = pytest.mark.django_db

MODEL = "llama-3.1-8b-instruct"


def _node(name: str, owner=None) -> WorkerNode:
    return WorkerNode.objects.create(
        name=name,
        credential_prefix=name[:12].ljust(12, "0"),
        hashed_credential="-",
        trust=Trust.COMMUNITY if owner else Trust.TRUSTED,
        owner=owner,
    )


def _settle(make_key, customer, request_id: str, *, worker: str, completion: int = 100, produced=None):
    model = CatalogModel.objects.get(model_id=MODEL)
    price = price_version_record(model)
    api_key, _ = make_key(customer)
    reservation = Reservation(
        request_id=request_id, user_id=customer.pk, api_key_id=api_key.pk, model=MODEL, price_version_id=price.pk,
        worst_case=Decimal("1"), prompt_tokens=50, max_tokens=200, reserved=False,
    )  # fmt: skip
    return admission.settle(
        reservation,
        prompt_tokens=50,
        completion_tokens=completion,
        produced=produced,
        endpoint="chat.completions",
        worker=worker,
        status_code=200,
    )


def test_a_community_node_earns_its_share_once(catalog, make_key, user, outsider, settings):
    settings.HOST_REVENUE_SHARE = "0.70"
    host = host_become(user=outsider, display_name="Bob")
    node = _node("bob-box-1", owner=outsider)
    record = _settle(make_key, user, "req-1", worker=node.name)
    assert record.cost > 0
    entry = EarningEntry.objects.get(request_id="req-1")
    assert entry.host == host and entry.node == node and entry.kind == EarningEntry.Kind.EARNING
    assert entry.amount == (record.cost * Decimal("0.70")).quantize(Decimal("0.00000001"))
    assert entry.charge == record.cost and entry.completion_tokens == 100 and entry.prompt_tokens == 50
    # Settled again (a retry, a survivor process): nothing more.
    _settle(make_key, user, "req-1", worker=node.name)
    assert EarningEntry.objects.filter(request_id="req-1").count() == 1
    assert LedgerEntry.objects.filter(reference="req-1").count() == 1
    balances = host_balances(host)
    assert balances["pending"] == entry.amount and balances["available"] == 0


def test_a_trusted_node_earns_nothing(catalog, make_key, user):
    _settle(make_key, user, "req-2", worker="unit-node-1")
    assert not EarningEntry.objects.exists()


def test_the_earning_is_in_the_charge_s_transaction(catalog, make_key, user, outsider, monkeypatch):
    host_become(user=outsider, display_name="Bob")
    node = _node("bob-box-2", owner=outsider)

    def broken(**kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(services, "_post", broken)
    with pytest.raises(RuntimeError):
        _settle(make_key, user, "req-3", worker=node.name)
    # Neither the charge nor the usage record is there without the earning.
    assert not LedgerEntry.objects.filter(reference="req-3").exists()
    assert not UsageRecord.objects.filter(request_id="req-3").exists()


def test_a_request_that_failed_over_pays_each_node_for_its_tokens(catalog, make_key, user, outsider, staff):
    first_host = host_become(user=outsider, display_name="Bob")
    second_host = host_become(user=staff, display_name="Carol")
    first, second = _node("bob-box-3", owner=outsider), _node("carol-box-1", owner=staff)
    record = _settle(make_key, user, "req-4", worker=second.name, produced={first.name: 30, second.name: 70})
    entries = {e.node_id: e for e in EarningEntry.objects.filter(request_id="req-4")}
    assert entries[first.pk].host == first_host and entries[second.pk].host == second_host
    assert entries[first.pk].completion_tokens == 30 and entries[first.pk].prompt_tokens == 0
    assert entries[second.pk].completion_tokens == 70 and entries[second.pk].prompt_tokens == 50
    assert entries[first.pk].charge + entries[second.pk].charge == record.cost
    assert entries[first.pk].charge < entries[second.pk].charge


def test_charge_split_always_adds_up():
    class Price:
        price_input_per_million = Decimal("0.3")
        price_output_per_million = Decimal("0.6")

    cost = Decimal("0.00009000")
    parts = charge_split(price=Price, prompt_tokens=50, completion_tokens=100, cost=cost, worker="b",
                         produced={"a": 500, "b": 3})  # fmt: skip
    assert sum(part[3] for part in parts) == cost
    assert sum(part[2] for part in parts) == 100  # a node cannot be paid for more than was billed
    assert parts[-1][0] == "b"


def test_earnings_figures(catalog, make_key, user, outsider):
    host = host_become(user=outsider, display_name="Bob")
    node = _node("bob-box-4", owner=outsider)
    for n in range(3):
        _settle(make_key, user, f"req-5-{n}", worker=node.name)
    figures = host_earnings(host)
    assert figures["requests"] == 3 and figures["tokens"] == 3 * 150
    assert figures["per_day"][-1][0] == timezone.now().date()
    assert figures["per_day"][-1][1] == figures["balances"]["pending"] > 0
    assert figures["per_model"][0]["model"] == MODEL and figures["per_model"][0]["requests"] == 3
    assert figures["per_node"][0]["id"] == node.pk

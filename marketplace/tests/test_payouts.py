"""Payouts: earnings become available after the hold; a host asks for at least the minimum; staff
approve, mark paid or reject, each step an entry; money is never created or lost."""

import csv
import io
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from marketplace import services
from marketplace.models import EarningEntry, Payout
from marketplace.selectors import host_balances
from marketplace.services import host_become

Kind = EarningEntry.Kind


def _earn(host, amount: str, *, days_ago: int, key: str):
    at = timezone.now() - timedelta(days=days_ago)
    return services._post(
        host=host, kind=Kind.EARNING, amount=Decimal(amount), idempotency_key=f"earning:{key}", request_id=key,
        available_at=at + timedelta(days=7), created_at=at,
    )  # fmt: skip


@pytest.fixture
def host(outsider):
    return host_become(user=outsider, display_name="Bob", payout_details="IBAN DE00")


@pytest.mark.django_db
def test_earnings_become_available_after_the_hold(host, settings):
    settings.EARNINGS_HOLD_DAYS = 7
    _earn(host, "12.00", days_ago=8, key="old")
    _earn(host, "5.00", days_ago=1, key="new")
    balances = host_balances(host)
    assert balances["available"] == Decimal("12.00") and balances["pending"] == Decimal("5.00")
    assert host_balances(host, now=timezone.now() + timedelta(days=7))["available"] == Decimal("17.00")


@pytest.mark.django_db
def test_a_payout_needs_the_minimum_and_no_more_than_is_available(host, settings):
    settings.PAYOUT_MINIMUM_USD = "10.00"
    _earn(host, "8.00", days_ago=8, key="a")
    _earn(host, "50.00", days_ago=1, key="pending")  # not available yet
    with pytest.raises(ValidationError, match="smallest payout"):
        services.payout_request(host=host)
    _earn(host, "4.00", days_ago=9, key="b")
    with pytest.raises(ValidationError, match="at most"):
        services.payout_request(host=host, amount=Decimal("13.00"))
    payout = services.payout_request(host=host)
    assert payout.amount == Decimal("12.00") and payout.status == Payout.Status.REQUESTED
    assert payout.payout_details == "IBAN DE00"
    balances = host_balances(host)
    assert balances["available"] == 0 and balances["in_payout"] == Decimal("12.00")
    with pytest.raises(ValidationError):
        services.payout_request(host=host, amount=Decimal("10.00"))  # already taken


@pytest.mark.django_db
def test_approve_then_pay_each_step_an_entry(host, staff):
    _earn(host, "20.00", days_ago=8, key="a")
    payout = services.payout_request(host=host, amount=Decimal("15.00"))
    services.payout_approve(payout=payout, staff=staff)
    with pytest.raises(ValidationError, match="reference"):
        services.payout_mark_paid(payout=payout, staff=staff, reference=" ")
    payout = services.payout_mark_paid(payout=payout, staff=staff, reference="SEPA-123")
    assert payout.status == Payout.Status.PAID and payout.reference == "SEPA-123" and payout.paid_at
    steps = list(payout.entries.order_by("id").values_list("kind", "amount"))
    assert steps == [
        (Kind.PAYOUT_REQUESTED, Decimal("-15.00")),
        (Kind.PAYOUT_APPROVED, Decimal("0")),
        (Kind.PAYOUT_PAID, Decimal("0")),
    ]
    balances = host_balances(host)
    assert balances["paid"] == Decimal("15.00") and balances["available"] == Decimal("5.00")
    assert balances["in_payout"] == 0
    with pytest.raises(ValidationError):
        services.payout_reject(payout=payout, staff=staff)  # paid is final


@pytest.mark.django_db
def test_a_rejected_payout_returns_to_available(host, staff):
    _earn(host, "20.00", days_ago=8, key="a")
    payout = services.payout_request(host=host)
    services.payout_reject(payout=payout, staff=staff, note="details incomplete")
    balances = host_balances(host)
    assert balances["available"] == Decimal("20.00") and balances["in_payout"] == 0 and balances["paid"] == 0
    # Money conserved: what was earned is available, in payout or paid.
    earned = sum(EarningEntry.objects.filter(host=host, kind=Kind.EARNING).values_list("amount", flat=True))
    assert earned == balances["available"] + balances["in_payout"] + balances["paid"]
    assert services.payout_request(host=host).amount == Decimal("20.00")


@pytest.mark.django_db(transaction=True)
def test_two_payout_requests_at_once_cannot_take_the_same_earnings(outsider):
    host = host_become(user=outsider, display_name="Bob")
    _earn(host, "30.00", days_ago=8, key="a")
    made, refused = [], []
    barrier = threading.Barrier(6)

    def ask():
        try:
            barrier.wait()
            made.append(services.payout_request(host=host, amount=Decimal("20.00")))
        except ValidationError as error:
            refused.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and len(refused) == 5
    assert host_balances(host)["available"] == Decimal("10.00")
    assert Payout.objects.count() == 1


@pytest.mark.django_db
def test_the_dashboard_flow(client, host, staff, settings):
    settings.PAYOUT_MINIMUM_USD = "10.00"
    _earn(host, "25.00", days_ago=8, key="a")
    client.force_login(host.user)
    assert "Request payout" in client.get(reverse("marketplace:host")).content.decode()
    response = client.post(reverse("marketplace:payout-request"), {"amount": "5"})
    assert response.status_code == 400 and "smallest payout" in response.content.decode()
    assert client.post(reverse("marketplace:payout-request"), {"amount": "25"}).status_code == 302
    payout = Payout.objects.get()
    # Only staff decide.
    assert client.get(reverse("marketplace:payouts")).status_code == 403
    assert client.post(reverse("marketplace:payout-decide", args=[payout.pk]), {"action": "paid"}).status_code == 403

    client.force_login(staff)
    page = client.get(reverse("marketplace:payouts")).content.decode()
    assert "Bob" in page and "25.00" in page
    client.post(reverse("marketplace:payout-decide", args=[payout.pk]), {"action": "approve"})
    client.post(reverse("marketplace:payout-decide", args=[payout.pk]), {"action": "paid", "reference": "TX-9"})
    payout.refresh_from_db()
    assert payout.status == Payout.Status.PAID and payout.reference == "TX-9" and payout.decided_by == staff
    response = client.get(reverse("marketplace:payouts-csv"))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0]["id"] == str(payout.pk) and rows[0]["status"] == "paid" and rows[0]["reference"] == "TX-9"
    assert rows[0]["amount_usd"] == "25.00000000"


@pytest.mark.django_db
def test_admin_actions(client, host, staff):
    staff.is_superuser = True
    staff.save()
    _earn(host, "25.00", days_ago=8, key="a")
    payout = services.payout_request(host=host)
    client.force_login(staff)
    url = reverse("admin:marketplace_payout_changelist")
    assert client.get(url).status_code == 200
    client.post(url, {"action": "payout_reject", "_selected_action": [payout.pk]})
    payout.refresh_from_db()
    assert payout.status == Payout.Status.REJECTED
    assert host_balances(host)["available"] == Decimal("25.00")
    assert client.get(reverse("admin:marketplace_earningentry_changelist")).status_code == 200

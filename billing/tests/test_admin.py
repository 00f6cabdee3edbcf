"""Admin: the ledger is read-only; staff add credits through billing.services."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import LedgerEntry
from billing.selectors import balance_of

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["ledgerentry", "billingaccount", "priceversion"])
def test_changelist_works(admin_client, user, model):
    response = admin_client.get(reverse(f"admin:billing_{model}_changelist"))

    assert response.status_code == 200


def test_an_entry_cannot_be_changed_or_deleted(admin_client, user):
    entry = LedgerEntry.objects.get(account=user)

    page = admin_client.get(reverse("admin:billing_ledgerentry_change", args=[entry.pk]))
    admin_client.post(reverse("admin:billing_ledgerentry_change", args=[entry.pk]), {"amount": "1000"})
    deleted = admin_client.post(reverse("admin:billing_ledgerentry_delete", args=[entry.pk]), {"post": "yes"})

    assert page.status_code == 200
    assert b'name="amount"' not in page.content
    assert deleted.status_code == 403
    assert LedgerEntry.objects.get(pk=entry.pk).amount == Decimal("5.00")


def test_staff_add_credits(admin_client, admin_user, user):
    response = admin_client.post(
        reverse("admin:billing_ledgerentry_add"), {"account": user.pk, "amount": "2.50", "note": "support"}
    )

    assert response.status_code == 302
    entry = LedgerEntry.objects.filter(account=user).latest("account_version")
    assert (entry.kind, entry.amount, entry.created_by) == ("grant", Decimal("2.50"), admin_user)
    assert balance_of(user) == Decimal("7.50")


def test_a_negative_credit_cannot_go_below_zero(admin_client, user):
    response = admin_client.post(reverse("admin:billing_ledgerentry_add"), {"account": user.pk, "amount": "-9"})

    assert response.status_code == 200
    assert b"below zero" in response.content
    assert balance_of(user) == Decimal("5.00")

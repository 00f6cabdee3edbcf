"""Staff grant credits on the Billing page."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import LedgerEntry
from billing.selectors import balance_of

pytestmark = pytest.mark.django_db

URL = reverse("billing:grant")


def test_it_works(client, staff, user):
    client.force_login(staff)

    response = client.post(URL, {"username": "alice", "amount": "10.00", "note": "pilot", "token": "t1"})

    assert response.status_code == 302
    assert balance_of(user) == Decimal("15.00")
    entry = LedgerEntry.objects.get(idempotency_key="dashboard:t1")
    assert (entry.kind, entry.created_by, entry.note) == ("grant", staff, "pilot")


def test_a_double_submission_posts_once(client, staff, user):
    client.force_login(staff)

    for _ in range(2):
        client.post(URL, {"username": "alice", "amount": "10.00", "token": "t1"})

    assert balance_of(user) == Decimal("15.00")


def test_a_negative_amount_cannot_go_below_zero(client, staff, user):
    client.force_login(staff)

    response = client.post(URL, {"username": "alice", "amount": "-6", "token": "t2"})

    assert response.status_code == 400
    assert "below" in response.content.decode()
    assert balance_of(user) == Decimal("5.00")


def test_it_rejects_an_unknown_user(client, staff):
    client.force_login(staff)

    response = client.post(URL, {"username": "nobody", "amount": "1", "token": "t3"})

    assert response.status_code == 400
    assert "No user named" in response.content.decode()


def test_it_rejects_non_staff(client, user):
    client.force_login(user)

    response = client.post(URL, {"username": "alice", "amount": "100", "token": "t4"})

    assert response.status_code == 403
    assert balance_of(user) == Decimal("5.00")


def test_it_requires_post(client, staff):
    client.force_login(staff)

    assert client.get(URL).status_code == 405

"""The Billing page: balance, spend, chart, key budgets, ledger paging, low-balance banner."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing import services

pytestmark = pytest.mark.django_db

URL = reverse("billing:billing")


def test_it_works(client, user, make_key):
    api_key, _ = make_key(user)
    services.request_charge(user=user, request_id="req_visible", cost=Decimal("0.5"), api_key=api_key)
    client.force_login(user)

    response = client.get(URL)

    assert response.status_code == 200
    content = response.content.decode()
    assert "$4.50" in content
    assert "Spent this month" in content and "$0.50" in content
    assert "req_visible" in content
    assert api_key.display_prefix in content
    assert "<svg" in content and "<rect" in content
    assert "Your balance is low" not in content
    assert "Grant credits" not in content


def test_it_requires_login(client, db):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_shows_only_the_users_entries(client, user, outsider):
    services.request_charge(user=outsider, request_id="req_secret", cost=Decimal("1"))
    client.force_login(user)

    assert "req_secret" not in client.get(URL).content.decode()


def test_it_warns_of_a_low_balance(client, user):
    services.adjustment(user=user, amount=Decimal("-4.50"))
    client.force_login(user)

    response = client.get(URL)

    assert "Your balance is low ($0.50)" in response.content.decode()


def test_it_pages_the_ledger(client, user):
    for n in range(60):
        services.credit_grant(user=user, amount=Decimal("0.01"), note=f"grant-{n:02d}")
    client.force_login(user)

    first = client.get(URL).content.decode()
    second = client.get(URL, {"page": 2}).content.decode()

    assert "grant-59" in first and "grant-10" in first and "grant-09" not in first
    assert "grant-09" in second and "Signup credit" in second
    assert "Page 1 of 2" in first


def test_it_shows_key_budgets_and_the_soft_notice(client, user, make_key):
    api_key, _ = make_key(user, name="batch", max_budget=Decimal("1.00"), budget_soft_percent=50)
    services.request_charge(user=user, request_id="req_1", cost=Decimal("0.60"), api_key=api_key)
    client.force_login(user)

    content = client.get(URL).content.decode()

    assert "Key budgets" in content
    assert "60%" in content
    assert "has used 60% of its budget of $1.00 (per month (utc))" in content


def test_staff_see_the_grant_form(client, staff):
    client.force_login(staff)

    assert "Grant credits" in client.get(URL).content.decode()

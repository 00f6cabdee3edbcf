"""``GET /api/balance``."""

from decimal import Decimal

import pytest

from accounts.models import ApiKey
from billing import services

pytestmark = pytest.mark.django_db

URL = "/api/balance"


def test_it_works(client, user, make_key):
    _, raw_key = make_key(user)
    services.request_charge(user=user, request_id="req_1", cost=Decimal("0.25"))

    response = client.get(URL, headers={"Authorization": f"Bearer {raw_key}"})

    assert response.status_code == 200
    assert response.json() == {"object": "balance", "currency": "usd", "balance": 4.75, "spend_this_month": 0.25}
    assert "x-ratelimit-limit-requests" in response


def test_it_shows_only_the_key_owners_balance(client, user, outsider, make_key):
    _, raw_key = make_key(outsider)
    services.credit_grant(user=user, amount=Decimal("100"))

    response = client.get(URL, headers={"Authorization": f"Bearer {raw_key}"})

    assert response.json()["balance"] == 5.0


def test_it_requires_the_management_scope(client, user, make_key):
    _, raw_key = make_key(user, scopes=[ApiKey.Scope.INFERENCE])

    response = client.get(URL, headers={"Authorization": f"Bearer {raw_key}"})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_it_requires_a_key(client, db):
    response = client.get(URL)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"

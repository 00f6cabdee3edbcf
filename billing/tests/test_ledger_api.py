"""``GET /api/ledger``."""

from decimal import Decimal

import pytest

from billing import services

pytestmark = pytest.mark.django_db

URL = "/api/ledger"


@pytest.fixture
def auth(user, make_key):
    _, raw_key = make_key(user)
    return {"Authorization": f"Bearer {raw_key}"}


def test_it_works(client, user, make_key, auth):
    api_key = user.api_keys.get()
    services.request_charge(user=user, request_id="req_1", cost=Decimal("0.00012345"), api_key=api_key)

    response = client.get(URL, headers=auth)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    charge, grant = body["data"]
    assert charge["kind"] == "charge"
    assert charge["amount"] == -0.00012345
    assert charge["balance_after"] == 4.99987655
    assert charge["reference"] == "req_1"
    assert charge["key"] == api_key.display_prefix
    assert grant["kind"] == "grant"
    assert grant["amount"] == 5.0


def test_it_pages(client, user, auth):
    for _ in range(5):
        services.credit_grant(user=user, amount=Decimal("1"))

    first = client.get(URL, {"limit": 2}, headers=auth).json()
    last = client.get(URL, {"limit": 2, "offset": 4}, headers=auth).json()

    assert first["count"] == 6
    assert len(first["data"]) == 2
    assert first["next"] and first["previous"] is None
    assert [e["note"] for e in last["data"]] == ["", "Signup credit"]
    assert last["next"] is None


def test_it_filters_by_kind(client, user, auth):
    services.request_charge(user=user, request_id="req_1", cost=Decimal("1"))

    body = client.get(URL, {"kind": "charge"}, headers=auth).json()

    assert [e["kind"] for e in body["data"]] == ["charge"]


def test_it_rejects_an_unknown_kind(client, auth):
    response = client.get(URL, {"kind": "gift"}, headers=auth)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "kind"


def test_it_shows_only_the_key_owners_entries(client, outsider, make_key, user):
    _, raw_key = make_key(outsider)

    body = client.get(URL, headers={"Authorization": f"Bearer {raw_key}"}).json()

    assert body["count"] == 1
    assert body["data"][0]["balance_after"] == 5.0

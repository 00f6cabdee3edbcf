"""CSV export of the ledger."""

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from billing import services

pytestmark = pytest.mark.django_db

URL = reverse("billing:ledger-csv")


def test_it_works(client, user, outsider):
    services.request_charge(user=user, request_id="req_1", cost=Decimal("0.00012345"))
    services.request_charge(user=outsider, request_id="req_other", cost=Decimal("1"))
    client.force_login(user)

    response = client.get(URL)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["kind"], r["amount_usd"], r["reference"]) for r in rows] == [
        ("charge", "-0.00012345", "req_1"),
        ("grant", "5.00000000", ""),
    ]


def test_it_requires_login(client, db):
    assert client.get(URL).status_code == 302

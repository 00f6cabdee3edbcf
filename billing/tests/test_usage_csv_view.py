"""CSV export of usage records."""

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from inference.models import UsageRecord

pytestmark = pytest.mark.django_db

URL = reverse("billing:usage-csv")


def _record(user, request_id, **fields):
    values = {"endpoint": "chat.completions", "status_code": 200, "model": "priced-model", "cost": Decimal("0.00012")}
    return UsageRecord.objects.create(request_id=request_id, user=user, **{**values, **fields})


def test_it_works(client, user, outsider, make_key):
    api_key, _ = make_key(user)
    _record(user, "req_mine", api_key=api_key, prompt_tokens=10, completion_tokens=20)
    _record(outsider, "req_theirs")
    client.force_login(user)

    response = client.get(URL)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 1
    row = rows[0]
    assert (row["request_id"], row["key"], row["prompt_tokens"], row["cost_usd"]) == (
        "req_mine",
        api_key.display_prefix,
        "10",
        "0.00012000",
    )


def test_it_requires_login(client, db):
    assert client.get(URL).status_code == 302

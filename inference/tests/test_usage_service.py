"""inference.services.usage_record: one usage record per request."""

from decimal import Decimal

import pytest

from inference.models import UsageRecord
from inference.services import usage_record

pytestmark = pytest.mark.django_db


def test_it_works(user, make_key):
    api_key, _ = make_key(user)

    record = usage_record(
        request_id="req_one",
        user=user,
        api_key=api_key,
        endpoint="chat.completions",
        model="llama-3.1-8b-instruct",
        status_code=200,
        prompt_tokens=12,
        completion_tokens=34,
        cost=Decimal("0.00001"),
    )

    stored = UsageRecord.objects.get()
    assert stored.pk == record.pk
    assert stored.request_id == "req_one"
    assert stored.api_key == api_key
    assert stored.total_tokens == 46
    assert stored.cost == Decimal("0.00001")


def test_it_records_a_request_once_and_keeps_the_first_values(user):
    first = usage_record(
        request_id="req_twice",
        user=user,
        endpoint="chat.completions",
        status_code=200,
        prompt_tokens=5,
        completion_tokens=7,
    )
    second = usage_record(
        request_id="req_twice",
        user=user,
        endpoint="models",
        status_code=500,
        prompt_tokens=50,
        completion_tokens=70,
        error_code="server_error",
    )

    assert UsageRecord.objects.filter(request_id="req_twice").count() == 1
    assert second.pk == first.pk
    stored = UsageRecord.objects.get(request_id="req_twice")
    assert (stored.endpoint, stored.status_code, stored.prompt_tokens, stored.completion_tokens) == (
        "chat.completions",
        200,
        5,
        7,
    )
    assert stored.error_code == ""
    assert (second.status_code, second.prompt_tokens) == (200, 5)


def test_it_keeps_records_of_different_requests_apart(user):
    usage_record(request_id="req_a", user=user, endpoint="chat.completions", status_code=200)
    usage_record(request_id="req_b", user=user, endpoint="chat.completions", status_code=200)

    assert UsageRecord.objects.count() == 2

"""``GET /api/usage``: the key owner's usage records, with filters and totals."""

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from accounts.models import ApiKey
from inference.models import UsageRecord
from inference.services import usage_record

pytestmark = pytest.mark.django_db


URL = "/api/usage"
JAN, FEB, MAR = (datetime(2024, month, 1, tzinfo=UTC) for month in (1, 2, 3))


def record(request_id, api_key, *, model="llama-3.1-8b-instruct", at=None, prompt=10, completion=20, cost="0.001"):
    usage_record(
        request_id=request_id,
        user=api_key.user,
        api_key=api_key,
        endpoint="chat.completions",
        model=model,
        status_code=200,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=Decimal(cost),
    )
    if at is not None:
        UsageRecord.objects.filter(request_id=request_id).update(created_at=at)


@pytest.fixture
def keys(user, outsider, make_key):
    """Two keys of the owner (the first with the management scope), one of an outsider, and records."""
    owner_key, owner_raw = make_key(user, name="ops")
    other_key, _ = make_key(user, name="batch", scopes=[ApiKey.Scope.INFERENCE])
    outsider_key, outsider_raw = make_key(outsider, name="theirs")
    record("req_jan", owner_key, at=JAN, prompt=1, completion=2, cost="0.1")
    record("req_feb", other_key, at=FEB, model="qwen2.5-72b-instruct", prompt=10, completion=20, cost="0.2")
    record("req_mar", owner_key, at=MAR, prompt=100, completion=200, cost="0.4")
    record("req_outsider", outsider_key, at=FEB, prompt=1000, completion=2000, cost="9")
    return {"owner": owner_key, "owner_raw": owner_raw, "other": other_key, "outsider_raw": outsider_raw}


def get(client, raw_key=None, **params):
    headers = {"Authorization": f"Bearer {raw_key}"} if raw_key else {}
    return client.get(URL, params, headers=headers)


def request_ids(response) -> list[str]:
    return [row["request_id"] for row in response.json()["data"]]


def assert_openai_error(response, status: int, code: str | None, type: str = "invalid_request_error") -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type
    assert error["code"] == code
    return error


def test_it_works(client, keys):
    response = get(client, keys["owner_raw"])

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["count"] == 3
    assert request_ids(response) == ["req_mar", "req_feb", "req_jan"]
    assert body["totals"] == {"requests": 3, "prompt_tokens": 111, "completion_tokens": 222, "cost": 0.7}
    mar = body["data"][0]
    assert mar["key"] == keys["owner"].display_prefix
    assert mar["model"] == "llama-3.1-8b-instruct"
    assert mar["total_tokens"] == 300
    assert mar["created_at"].startswith("2024-03-01T00:00:00")


def test_it_shows_only_the_owners_records(client, keys):
    response = get(client, keys["outsider_raw"])

    assert response.status_code == 200
    assert request_ids(response) == ["req_outsider"]
    assert response.json()["totals"]["prompt_tokens"] == 1000


def test_it_filters_by_key(client, keys):
    response = get(client, keys["owner_raw"], key=keys["other"].display_prefix)

    assert request_ids(response) == ["req_feb"]
    assert response.json()["totals"] == {"requests": 1, "prompt_tokens": 10, "completion_tokens": 20, "cost": 0.2}


def test_it_filters_by_key_prefix_without_gpc(client, keys):
    response = get(client, keys["owner_raw"], key=keys["owner"].prefix)

    assert request_ids(response) == ["req_mar", "req_jan"]


def test_it_does_not_show_an_outsiders_key(client, keys):
    outsider_key = ApiKey.objects.get(name="theirs")

    response = get(client, keys["owner_raw"], key=outsider_key.display_prefix)

    assert response.status_code == 200
    assert request_ids(response) == []
    assert response.json()["totals"] == {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0}


def test_it_filters_by_model(client, keys):
    response = get(client, keys["owner_raw"], model="qwen2.5-72b-instruct")

    assert request_ids(response) == ["req_feb"]


@pytest.mark.parametrize("start", ["2024-02-01T00:00:00Z", "2024-02-01T00:00:00", "2024-02-01T01:00:00+01:00"])
def test_it_filters_by_an_iso_start(client, keys, start):
    response = get(client, keys["owner_raw"], start=start)

    assert response.status_code == 200
    assert request_ids(response) == ["req_mar", "req_feb"]
    assert response.json()["totals"]["requests"] == 2


def test_it_filters_by_a_unix_end(client, keys):
    response = get(client, keys["owner_raw"], end=str(int(MAR.timestamp())))

    assert request_ids(response) == ["req_feb", "req_jan"]


def test_it_filters_by_start_and_end(client, keys):
    response = get(client, keys["owner_raw"], start=str(FEB.timestamp()), end="2024-02-15T00:00:00Z")

    assert request_ids(response) == ["req_feb"]


@pytest.mark.parametrize("start", ["yesterday", "2024-13-01T00:00:00", "12abc"])
def test_it_rejects_a_bad_start(client, keys, start):
    error = assert_openai_error(get(client, keys["owner_raw"], start=start), 400, None)

    assert error["param"] == "start"
    assert start in error["message"]


@pytest.mark.parametrize(
    "start", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1e308", "-1e20", "nan", "inf"]
)
def test_it_rejects_a_start_out_of_range(client, keys, start):
    error = assert_openai_error(get(client, keys["owner_raw"], start=start), 400, None)

    assert error["param"] == "start"


@pytest.mark.parametrize("param", ["key", "model", "start"])
def test_it_rejects_nul_in_a_filter(client, keys, param):
    # PostgreSQL text cannot hold NUL: it must be a 400, not a database error.
    error = assert_openai_error(get(client, keys["owner_raw"], **{param: "a\x00b"}), 400, None)

    assert error["param"] == param


def test_it_rejects_a_bad_end(client, keys):
    error = assert_openai_error(get(client, keys["owner_raw"], end="soon"), 400, None)

    assert error["param"] == "end"


def test_it_rejects_a_start_after_the_end(client, keys):
    error = assert_openai_error(get(client, keys["owner_raw"], start="2024-03-01", end="2024-02-01"), 400, None)

    assert error["param"] == "start"


def test_it_pages(client, keys):
    response = get(client, keys["owner_raw"], limit=2)

    body = response.json()
    assert body["count"] == 3
    assert request_ids(response) == ["req_mar", "req_feb"]
    assert "offset=2" in body["next"]
    assert request_ids(get(client, keys["owner_raw"], limit=2, offset=2)) == ["req_jan"]


def test_it_rejects_an_inference_only_key(client, user, make_key, keys):
    _, raw_key = make_key(user, scopes=[ApiKey.Scope.INFERENCE])

    error = assert_openai_error(get(client, raw_key), 403, "insufficient_scope", type="permission_error")

    assert "management" in error["message"]


def test_it_requires_a_key(client, keys):
    error = assert_openai_error(get(client), 401, "invalid_api_key")

    assert error["param"] is None


def test_it_rejects_a_wrong_key(client, keys):
    assert_openai_error(get(client, keys["owner_raw"] + "x"), 401, "invalid_api_key")


def test_it_sends_rate_limit_headers(client, user, make_key, keys):
    _, raw_key = make_key(user, rpm=9)

    response = get(client, raw_key)

    assert response.status_code == 200
    assert response["x-ratelimit-limit-requests"] == "9"
    assert response["x-ratelimit-remaining-requests"] == "8"
    assert re.fullmatch(r"\d+s", response["x-ratelimit-reset-requests"])
    assert re.fullmatch(r"req_[0-9a-f]{24}", response["x-request-id"])


def test_it_rate_limits(client, user, make_key, keys):
    _, raw_key = make_key(user, rpm=1)  # a sliding window: no edge to wait for

    first = get(client, raw_key)
    second = get(client, raw_key)

    assert first.status_code == 200
    assert_openai_error(second, 429, "rate_limit_exceeded", type="requests")
    assert second["x-ratelimit-limit-requests"] == "1"
    assert second["x-ratelimit-remaining-requests"] == "0"
    assert int(second["Retry-After"]) >= 1

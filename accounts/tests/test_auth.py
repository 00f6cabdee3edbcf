"""accounts.auth: key authentication, scopes and per-key rate limits, through ``GET /v1/models``.

Requests go through the ASGI handler (``AsyncClient``), as they do under Daphne; ``async_to_sync``
runs the view's database calls on this thread, inside the test's transaction.
"""

import re
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.utils import timezone

from accounts import ratelimit
from accounts.models import ApiKey
from accounts.services import api_key_revoke
from gpucloud.redis_client import get_redis

pytestmark = pytest.mark.django_db


URL = "/v1/models"


def get(headers: dict | None = None):
    return async_to_sync(AsyncClient().get)(URL, headers=headers or {})


def bearer(raw_key: str) -> dict:
    return {"Authorization": f"Bearer {raw_key}"}


def assert_openai_error(response, status: int, code: str, type: str = "invalid_request_error") -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"] == type
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_it_works(user, make_key, catalog):
    _, raw_key = make_key(user)

    response = get(bearer(raw_key))

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} == {d.model.model_id for d in catalog}


def test_it_accepts_a_lowercase_scheme(user, make_key, catalog):
    _, raw_key = make_key(user)

    response = get({"Authorization": f"bearer {raw_key}"})

    assert response.status_code == 200


def test_it_rejects_a_missing_header(catalog):
    error = assert_openai_error(get(), 401, "invalid_api_key")

    assert "Authorization: Bearer" in error["message"]


@pytest.mark.parametrize("scheme", ["Basic", "Token", ""])
def test_it_rejects_a_wrong_scheme(user, make_key, catalog, scheme):
    _, raw_key = make_key(user)

    assert_openai_error(get({"Authorization": f"{scheme} {raw_key}".strip()}), 401, "invalid_api_key")


def test_it_rejects_a_bearer_without_a_key(catalog):
    assert_openai_error(get({"Authorization": "Bearer "}), 401, "invalid_api_key")


def test_it_rejects_a_wrong_key(user, make_key, catalog):
    api_key, raw_key = make_key(user)
    wrong = raw_key[:-4] + ("AAAA" if not raw_key.endswith("AAAA") else "BBBB")

    error = assert_openai_error(get(bearer(wrong)), 401, "invalid_api_key")

    # The key is masked in the message, never echoed whole.
    assert wrong not in error["message"]
    api_key.refresh_from_db()
    assert api_key.request_count == 0


def test_it_rejects_a_revoked_key_immediately(user, make_key, catalog):
    api_key, raw_key = make_key(user)
    assert get(bearer(raw_key)).status_code == 200

    api_key_revoke(api_key=api_key)
    error = assert_openai_error(get(bearer(raw_key)), 401, "invalid_api_key")

    assert "revoked" in error["message"]


def test_it_rejects_an_expired_key(user, make_key, catalog):
    api_key, raw_key = make_key(user, expires_at=timezone.now() + timedelta(hours=1))
    assert get(bearer(raw_key)).status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    error = assert_openai_error(get(bearer(raw_key)), 401, "invalid_api_key")

    assert "expired" in error["message"]


def test_it_rejects_a_key_of_an_inactive_user(user, make_key, catalog):
    _, raw_key = make_key(user)
    user.is_active = False
    user.save(update_fields=["is_active"])

    error = assert_openai_error(get(bearer(raw_key)), 401, "invalid_api_key")

    assert "disabled" in error["message"]


def test_it_rejects_a_key_without_the_inference_scope(user, make_key, catalog):
    api_key, raw_key = make_key(user, scopes=[ApiKey.Scope.MANAGEMENT])

    error = assert_openai_error(get(bearer(raw_key)), 403, "insufficient_scope", type="permission_error")

    assert "inference" in error["message"]
    api_key.refresh_from_db()
    assert api_key.request_count == 0


def test_it_rate_limits_a_key(user, make_key, catalog):
    _, raw_key = make_key(user, rpm=2)

    first = get(bearer(raw_key))
    second = get(bearer(raw_key))
    third = get(bearer(raw_key))

    assert first.status_code == 200
    assert second.status_code == 200
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert second["x-ratelimit-remaining-requests"] == "0"
    error = assert_openai_error(third, 429, "rate_limit_exceeded", type="requests")
    assert "2 requests per minute" in error["message"]
    retry_after = int(third["Retry-After"])
    assert 1 <= retry_after <= 60
    assert third["x-ratelimit-limit-requests"] == "2"
    assert third["x-ratelimit-remaining-requests"] == "0"
    assert third["x-ratelimit-reset-requests"] == f"{retry_after}s"


def test_it_limits_each_key_separately(user, make_key, catalog):
    _, limited = make_key(user, rpm=1)
    _, other = make_key(user, rpm=1)

    assert get(bearer(limited)).status_code == 200
    assert get(bearer(limited)).status_code == 429
    assert get(bearer(other)).status_code == 200


def test_it_sends_rate_limit_and_request_id_headers(user, make_key, catalog):
    _, raw_key = make_key(user, rpm=5)

    response = get(bearer(raw_key))

    assert response.status_code == 200
    assert response["x-ratelimit-limit-requests"] == "5"
    assert response["x-ratelimit-remaining-requests"] == "4"
    reset = re.fullmatch(r"(\d+)s", response["x-ratelimit-reset-requests"])
    assert reset and 1 <= int(reset[1]) <= 60
    assert re.fullmatch(r"req_[0-9a-f]{24}", response["x-request-id"])
    assert get(bearer(raw_key))["x-request-id"] != response["x-request-id"]


def test_no_window_edge_doubles_the_limit(user, make_key, catalog):
    """A fixed one-minute window lets a key through twice: at the end of one window and the start
    of the next. A sliding window counts the last 60 seconds, wherever they fall."""
    api_key, raw_key = make_key(user, rpm=3)
    # Requests at 30 s, 40 s and 50 s ago, as if the key used its limit late in the last minute.
    redis = get_redis()
    now_ms = int(time.time() * 1000)
    name = f"{ratelimit.KEY_PREFIX}api-key:{api_key.prefix}"
    redis.zadd(name, {f"earlier-{age}": now_ms - age * 1000 for age in (30, 40, 50)})

    response = get(bearer(raw_key))

    error = assert_openai_error(response, 429, "rate_limit_exceeded", type="requests")
    # The oldest of the three leaves the window about 10 s from now.
    assert 9 <= int(response["Retry-After"]) <= 11, error


def test_it_lets_requests_through_as_they_leave_the_window(user, make_key, catalog):
    api_key, raw_key = make_key(user, rpm=2)
    redis = get_redis()
    now_ms = int(time.time() * 1000)
    name = f"{ratelimit.KEY_PREFIX}api-key:{api_key.prefix}"
    redis.zadd(name, {"old": now_ms - 61_000, "recent": now_ms - 5_000})

    response = get(bearer(raw_key))

    assert response.status_code == 200
    assert response["x-ratelimit-remaining-requests"] == "0"
    assert get(bearer(raw_key)).status_code == 429


def test_it_records_use(user, make_key, catalog):
    api_key, raw_key = make_key(user)
    assert api_key.request_count == 0
    assert api_key.last_used_at is None
    before = timezone.now()

    get(bearer(raw_key))
    get(bearer(raw_key))

    api_key.refresh_from_db()
    assert api_key.request_count == 2
    assert before <= api_key.last_used_at <= timezone.now()

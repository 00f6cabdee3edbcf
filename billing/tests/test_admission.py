"""billing.admission: admit, settle and release against real Redis.

Prices: $1 per million input tokens, $2 per million output tokens, so a request of 100 prompt
tokens and max_tokens 200 has a worst case of 100 x 1e-6 + 200 x 2e-6 = $0.0005.
"""

import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
from django.db import connection
from redis.exceptions import ConnectionError as RedisConnectionError

from billing import admission, redis_state, services
from billing.admission import AdmissionRefused
from billing.models import LedgerEntry
from billing.money import from_units
from billing.selectors import balance_of, reconciliation_differences
from gpucloud.openai_errors import ApiError
from gpucloud.redis_client import get_redis
from inference.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

WORST = Decimal("0.0005")


@pytest.fixture
def account(user, settings):
    """``user`` with exactly $0.025 of credit: 50 worst cases."""
    services.adjustment(user=user, amount=Decimal("-5.00"))
    services.credit_grant(user=user, amount=Decimal("0.025"))
    return user


def admit(api_key, model, request_id, prompt_tokens=100, max_tokens=200):
    return admission.admit(api_key, model, request_id=request_id, prompt_tokens=prompt_tokens, max_tokens=max_tokens)


def settle(reservation, prompt_tokens=100, completion_tokens=200):
    return admission.settle(
        reservation,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        endpoint="chat.completions",
        status_code=200,
    )


def reserved(user) -> dict:
    res, _ = redis_state.reservation_keys(user.pk)
    return {k.decode(): int(v) for k, v in get_redis().hgetall(res).items() if not k.startswith(b"r:")}


# PostgreSQL allows 100 connections and every thread holds one: more threads than this take turns.
MAX_THREADS = 40


def in_threads(count: int, work) -> list:
    """Run work(i) for i < ``count`` in up to MAX_THREADS threads started together, each taking the
    next i as soon as it is done; returns each result or exception."""
    results = [None] * count
    threads_count = min(count, MAX_THREADS)
    barrier = threading.Barrier(threads_count)
    indices = iter(range(count))
    lock = threading.Lock()

    def run():
        try:
            barrier.wait()
            while True:
                with lock:
                    index = next(indices, None)
                if index is None:
                    return
                try:
                    results[index] = work(index)
                except Exception as error:
                    results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def minute_with_room():
    """Wait out the last seconds of a minute, so a TPM test runs inside one window."""
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.05)


def outcomes(results) -> Counter:
    return Counter(
        "admitted" if isinstance(r, admission.Reservation) else getattr(r, "reason", repr(r)) for r in results
    )


def test_it_works(account, model, make_key):
    api_key, _ = make_key(account)

    reservation = admit(api_key, model, "req_1")
    assert reservation.worst_case == WORST
    assert reserved(account)["total"] == 50_000  # $0.0005 in 1e-8 units
    assert reserved(account)[f"n:{api_key.pk}"] == 1

    record = settle(reservation, completion_tokens=50)

    assert record.cost == Decimal("0.0002")  # 100 x $1/M + 50 x $2/M
    assert record.price_version_id == reservation.price_version_id
    charge = LedgerEntry.objects.get(idempotency_key="charge:req_1")
    assert charge.amount == -record.cost
    assert charge.api_key == api_key
    assert balance_of(account) == Decimal("0.0248")
    assert reserved(account)["total"] == 0
    assert reserved(account)[f"n:{api_key.pk}"] == 0
    assert reconciliation_differences() == []


def test_settle_is_idempotent(account, model, make_key):
    api_key, _ = make_key(account)
    reservation = admit(api_key, model, "req_1")

    settle(reservation)
    settle(reservation)

    assert UsageRecord.objects.filter(request_id="req_1").count() == 1
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).count() == 1
    assert balance_of(account) == Decimal("0.0245")


def test_admitting_a_request_twice_reserves_once(account, model, make_key):
    api_key, _ = make_key(account)

    admit(api_key, model, "req_1")
    admit(api_key, model, "req_1")

    assert reserved(account)["total"] == 50_000


def test_release_frees_without_a_charge(account, model, make_key):
    api_key, _ = make_key(account)
    reservation = admit(api_key, model, "req_1")

    admission.release(reservation)
    admission.release(reservation)

    assert reserved(account)["total"] == 0
    assert balance_of(account) == Decimal("0.025")
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).exists()


def test_it_refuses_when_the_balance_cannot_cover_the_worst_case(account, model, make_key):
    api_key, _ = make_key(account)

    with pytest.raises(AdmissionRefused) as refused:
        admit(api_key, model, "req_1", max_tokens=20_000)  # worst case $0.0401

    error = refused.value
    assert isinstance(error, ApiError)
    assert (error.status, error.type, error.code, error.reason) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "balance",
    )
    assert "$0.025 available" in error.message
    assert "Ask an operator for credits" in error.message


def test_max_tokens_defaults_to_the_room_left_in_the_context(account, model, make_key):
    api_key, _ = make_key(account)
    services.credit_grant(user=account, amount=Decimal("1"))

    reservation = admission.admit(api_key, model, request_id="req_1", prompt_tokens=192)

    assert reservation.max_tokens == 8000
    assert reservation.worst_case == Decimal("0.016192")


def test_exactly_the_requests_the_balance_covers_are_admitted(account, model, make_key):
    api_key, _ = make_key(account)

    results = in_threads(200, lambda i: admit(api_key, model, f"req_{i}"))

    assert outcomes(results) == {"admitted": 50, "balance": 150}
    assert all(r.code == "insufficient_quota" for r in results if isinstance(r, AdmissionRefused))
    settled = in_threads(50, lambda i: settle([r for r in results if isinstance(r, admission.Reservation)][i]))
    assert all(isinstance(r, UsageRecord) for r in settled)
    assert balance_of(account) == Decimal("0")
    assert reserved(account)["total"] == 0
    assert reconciliation_differences() == []
    with pytest.raises(AdmissionRefused):
        admit(api_key, model, "req_more", prompt_tokens=1, max_tokens=0)


def test_a_budget_is_never_overshot(account, model, make_key):
    services.credit_grant(user=account, amount=Decimal("10"))
    api_key, _ = make_key(account, max_budget=Decimal("0.005"), budget_period="day")  # 10 worst cases

    results = in_threads(60, lambda i: admit(api_key, model, f"req_{i}"))

    assert outcomes(results) == {"admitted": 10, "budget": 50}
    refusal = next(r for r in results if isinstance(r, AdmissionRefused))
    assert refusal.code == "insufficient_quota"
    assert "daily budget of $0.005" in refusal.message
    for reservation in results:
        if isinstance(reservation, admission.Reservation):
            settle(reservation, completion_tokens=0)  # $0.0001 each: $0.001 spent
    # Settled spend counts, not the worst cases: 8 more worst cases fit into the $0.004 left.
    results = in_threads(20, lambda i: admit(api_key, model, f"more_{i}"))
    assert outcomes(results) == {"admitted": 8, "budget": 12}


def test_budget_spend_is_rebuilt_from_the_ledger(account, model, make_key):
    services.credit_grant(user=account, amount=Decimal("10"))
    api_key, _ = make_key(account, max_budget=Decimal("0.001"), budget_period="month")
    for i in range(2):
        settle(admit(api_key, model, f"req_{i}"), completion_tokens=0)  # $0.0001 each

    get_redis().flushdb()

    # $0.0008 left: one worst case ($0.0005) fits, a second does not.
    admit(api_key, model, "req_a")
    with pytest.raises(AdmissionRefused) as refused:
        admit(api_key, model, "req_b")
    assert refused.value.reason == "budget"


def test_max_parallel_is_never_exceeded(account, model, make_key):
    api_key, _ = make_key(account, max_parallel=4)

    results = in_threads(30, lambda i: admit(api_key, model, f"req_{i}", prompt_tokens=1, max_tokens=1))

    assert outcomes(results) == {"admitted": 4, "parallel": 26}
    refusal = next(r for r in results if isinstance(r, AdmissionRefused))
    assert (refusal.status, refusal.code, refusal.headers["Retry-After"]) == (429, "rate_limit_exceeded", "1")
    admission.release(next(r for r in results if isinstance(r, admission.Reservation)))
    admit(api_key, model, "req_after", prompt_tokens=1, max_tokens=1)


def test_an_account_has_at_most_its_share_of_requests_in_flight_over_all_its_keys(account, model, make_key, settings):
    settings.ACCOUNT_MAX_IN_FLIGHT = 3
    first, _ = make_key(account)
    second, _ = make_key(account, name="second key")
    held = [admit(first, model, "req_a1"), admit(second, model, "req_a2"), admit(second, model, "req_a3")]

    with pytest.raises(AdmissionRefused) as refused:
        admit(first, model, "req_a4")
    assert (refused.value.reason, refused.value.code, refused.value.status) == (
        "account_parallel",
        "rate_limit_exceeded",
        429,
    )
    assert "3 requests in flight" in str(refused.value)

    admission.release(held[0])
    admit(first, model, "req_a4")  # room again


def test_tpm_holds_to_the_token(account, model, make_key):
    api_key, _ = make_key(account, tpm=1000)
    minute_with_room()

    results = in_threads(12, lambda i: admit(api_key, model, f"req_{i}", prompt_tokens=50, max_tokens=50))

    assert outcomes(results) == {"admitted": 10, "tpm": 2}
    refusal = next(r for r in results if isinstance(r, AdmissionRefused))
    assert refusal.code == "rate_limit_exceeded"
    assert refusal.type == "tokens"
    assert 1 <= int(refusal.headers["Retry-After"]) <= 60
    assert refusal.headers["x-ratelimit-remaining-tokens"] == "0"
    admitted = [r for r in results if isinstance(r, admission.Reservation)]
    assert sorted(r.tpm_remaining for r in admitted) == list(range(0, 1000, 100))
    assert admitted[0].headers()["x-ratelimit-limit-tokens"] == "1000"


def test_settling_gives_unused_tokens_back_to_the_minute(account, model, make_key):
    api_key, _ = make_key(account, tpm=300)
    minute_with_room()
    first = admit(api_key, model, "req_1", prompt_tokens=50, max_tokens=250)

    settle(first, prompt_tokens=50, completion_tokens=10)

    # 60 tokens were used, so 240 are free again.
    second = admit(api_key, model, "req_2", prompt_tokens=40, max_tokens=200)
    assert second.tpm_remaining == 0


def test_a_request_larger_than_the_tpm_limit_says_so(account, model, make_key):
    api_key, _ = make_key(account, tpm=100)

    with pytest.raises(AdmissionRefused, match="alone exceeds"):
        admit(api_key, model, "req_1", prompt_tokens=50, max_tokens=51)


def test_state_is_rebuilt_from_the_database_after_flushdb(account, model, make_key):
    api_key, _ = make_key(account)
    for i in range(10):
        settle(admit(api_key, model, f"req_{i}"))  # $0.005 spent, $0.020 left: 40 worst cases

    get_redis().flushdb()

    results = in_threads(60, lambda i: admit(api_key, model, f"after_{i}"))
    assert outcomes(results) == {"admitted": 40, "balance": 20}


def test_grants_reach_the_loaded_state(account, model, make_key):
    api_key, _ = make_key(account)
    admit(api_key, model, "req_1")  # loads the state

    services.credit_grant(user=account, amount=Decimal("0.0005"))

    results = in_threads(60, lambda i: admit(api_key, model, f"req_{i + 2}"))
    assert outcomes(results) == {"admitted": 50, "balance": 10}


def test_entries_count_once_whatever_order_they_arrive_in(account):
    redis_state.load_state(account.pk)
    entries = [services.credit_grant(user=account, amount=Decimal("1")) for _ in range(3)]

    # Applied again, and out of order (as concurrent settles may deliver them).
    for entry in reversed(entries):
        redis_state.apply_entry(entry)
    redis_state.apply_entry(entries[0])

    state = {k.decode(): v.decode() for k, v in get_redis().hgetall(redis_state.state_key(account.pk)).items()}
    assert from_units(int(state["bal"])) + from_units(int(state.get("pbal", 0))) == Decimal("3.025")
    assert int(state["v"]) == entries[-1].account_version


def test_an_entry_applied_before_the_state_loads_is_not_lost(account):
    # The entry commits, then (a reload in between having read the database) arrives at Redis.
    entry = LedgerEntry.objects.filter(account=account).latest("account_version")
    get_redis().flushdb()
    redis_state.apply_entry(entry)  # no state yet: kept as pending
    redis_state.load_state(account.pk)  # reads a version that includes it: it is dropped

    state = get_redis().hgetall(redis_state.state_key(account.pk))
    assert from_units(int(state[b"bal"])) == Decimal("0.025")
    assert int(state.get(b"pbal", 0)) == 0


def test_unsettled_reservations_expire(account, model, make_key, settings):
    settings.BILLING_RESERVATION_TTL = 0.2
    api_key, _ = make_key(account, max_parallel=1)
    admit(api_key, model, "req_lost")  # its worker died and nobody settles it

    time.sleep(0.3)

    admit(api_key, model, "req_next")
    assert reserved(account)["total"] == 50_000


def test_it_fails_closed_without_redis(account, model, make_key, monkeypatch):
    api_key, _ = make_key(account)

    def down(source):
        def run(**kwargs):
            raise RedisConnectionError("down")

        return run

    monkeypatch.setattr(redis_state, "script", down)
    with pytest.raises(ApiError) as error:
        admit(api_key, model, "req_1")
    assert error.value.status == 503


def test_billing_off_admits_without_checks(account, model, make_key, settings):
    settings.BILLING_ENABLED = False
    api_key, _ = make_key(account)

    reservation = admit(api_key, model, "req_1", max_tokens=1_000_000)

    assert not reservation.reserved
    assert reserved(account) == {}


def test_a_price_change_applies_to_the_next_admission(account, model, make_key):
    api_key, _ = make_key(account)
    assert admit(api_key, model, "req_1").worst_case == WORST

    model.price_output_per_million = Decimal("4.00")
    model.save()

    reservation = admit(api_key, model, "req_2")
    assert reservation.worst_case == Decimal("0.0009")
    record = settle(reservation)
    assert record.cost == Decimal("0.0009")
    assert record.price_version.price_output_per_million == Decimal("4.00")


def test_prices_are_read_again_when_redis_lost_them(account, model, make_key):
    api_key, _ = make_key(account)
    admit(api_key, model, "req_1")
    get_redis().flushdb()

    assert admit(api_key, model, "req_2").worst_case == WORST


def test_a_price_version_redis_does_not_know_is_replaced(account, model, make_key):
    api_key, _ = make_key(account)
    get_redis().hset(redis_state.PRICES_KEY, model.pk, 999_999)  # e.g. the database was reset

    assert admit(api_key, model, "req_1").worst_case == WORST
    assert get_redis().hget(redis_state.PRICES_KEY, model.pk) != b"999999"


def test_settle_without_charge_records_usage_for_free(account, model, make_key):
    api_key, _ = make_key(account)
    reservation = admit(api_key, model, "req_failed")

    record = admission.settle(
        reservation, prompt_tokens=100, completion_tokens=0, charge=False, endpoint="chat.completions", status_code=503
    )

    assert (record.cost, record.prompt_tokens, record.status_code) == (Decimal("0"), 100, 503)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).exists()
    assert reserved(account)["total"] == 0
    assert reconciliation_differences() == []

"""Admission: check and reserve a request's money and limits in one atomic Redis step.

The request path calls, for each billable request (a key, a model, counted prompt tokens)::

    reservation = admit(api_key, model, request_id=..., prompt_tokens=..., max_tokens=...)
    ...                                   # raises AdmissionRefused (an ApiError, 429) instead
    settle(reservation, prompt_tokens=..., completion_tokens=..., **usage_fields)   # served
    release(reservation)                  # nothing to charge and no usage record to write
    settle(reservation, ..., charge=False)  # or: record the usage of a failed request at no cost

:func:`admit` checks, for the key and its account, in one Lua script: the balance covers the
request's worst case (prompt tokens x input price + max tokens x output price, at the price
version in force now), the key's budget for its period is not exceeded (settled spend plus what
its requests in flight reserved), the key's tokens per minute (prompt + max tokens, one-minute
windows) and its requests in flight (``max_parallel``); and reserves all of that together.
:func:`settle` writes the usage record and the charge in one database transaction, then frees the
reservation; :func:`release` frees it without a charge. Both are idempotent. The functions are
synchronous: call them with ``sync_to_async`` from async views.

State in Redis is derived from the database (see billing.redis_state): lost state is reloaded,
and reservations that are never settled expire after ``BILLING_RESERVATION_TTL``. If Redis is
flushed while requests are in flight, those requests are still charged when they settle (the
charge is in the database), but their reservations are gone: the account can go below zero by
at most what they cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from billing import redis_state, selectors, services
from billing.money import from_units, to_units, usd
from gpucloud.openai_errors import ApiError, service_unavailable


class AdmissionRefused(ApiError):
    """A 429 in the OpenAI shape. ``reason`` is balance, budget, tpm or parallel."""

    def __init__(self, message: str, *, reason: str, code: str, retry_after: int | None = None, headers=None):
        headers = dict(headers or {})
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        kind = "insufficient_quota" if code == "insufficient_quota" else ("tokens" if reason == "tpm" else "requests")
        super().__init__(message, status=429, type=kind, code=code, headers=headers)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reservation:
    """What :func:`admit` reserved for one request. Plain data: it may be passed between processes
    as ``asdict(reservation)`` and rebuilt with ``Reservation(**data)``."""

    request_id: str
    user_id: int
    api_key_id: int
    model: str
    price_version_id: int | None
    worst_case: Decimal
    prompt_tokens: int
    max_tokens: int
    tpm_limit: int | None = None
    tpm_remaining: int | None = None
    tpm_reset_seconds: int = 0
    reserved: bool = True

    def headers(self) -> dict[str, str]:
        """The token rate-limit headers for the response (empty for a key without a TPM limit)."""
        if self.tpm_limit is None:
            return {}
        return {
            "x-ratelimit-limit-tokens": str(self.tpm_limit),
            "x-ratelimit-remaining-tokens": str(max(self.tpm_remaining or 0, 0)),
            "x-ratelimit-reset-tokens": f"{self.tpm_reset_seconds}s",
        }

    def as_dict(self) -> dict:
        return asdict(self)


def admit(api_key, model, *, request_id: str, prompt_tokens: int, max_tokens: int | None = None) -> Reservation:
    """Check and reserve a request of ``api_key`` (accounts.ApiKey) on ``model`` (CatalogModel).

    ``max_tokens`` None means the room left in the model's context. Returns the Reservation;
    raises :class:`AdmissionRefused` (429 ``insufficient_quota`` for balance or budget, 429
    ``rate_limit_exceeded`` with Retry-After for TPM or max_parallel), or a 503 ApiError when
    Redis cannot be reached (no request is served unreserved). Admitting the same request id
    twice reserves once.
    """
    if max_tokens is None:
        max_tokens = max(model.context_length - prompt_tokens, 0)
    if not settings.BILLING_ENABLED:
        price = selectors.price_in_force(model) or services.price_version_record(model)
        return _reservation(api_key, model, price, request_id, prompt_tokens, max_tokens, reserved=False)
    keys = [
        redis_state.state_key(api_key.user_id),
        *redis_state.reservation_keys(api_key.user_id),
        redis_state.tpm_prefix(api_key.user_id, api_key.pk),
        redis_state.PRICES_KEY,
    ]
    price = redis_state.cached_price(model)
    try:
        for _ in range(5):
            if price is None:
                price = redis_state.price_refresh(model, "")
            worst = selectors.request_cost(price, prompt_tokens, max_tokens)
            args = [
                request_id,
                api_key.pk,
                to_units(worst),
                prompt_tokens + max_tokens,
                to_units(api_key.max_budget) if api_key.max_budget is not None else -1,
                redis_state.spend_field(api_key, timezone.now()),
                -1 if api_key.tpm is None else api_key.tpm,
                -1 if api_key.max_parallel is None else api_key.max_parallel,
                int(settings.BILLING_RESERVATION_TTL * 1000),
                model.pk,
                price.pk,
                settings.ACCOUNT_MAX_IN_FLIGHT if settings.ACCOUNT_MAX_IN_FLIGHT else -1,
            ]
            result = [part.decode() for part in redis_state.script(redis_state.ADMIT)(keys=keys, args=args)]
            if result[0] == "reload":
                redis_state.load_state(api_key.user_id)
            elif result[0] == "price":  # the price changed, or Redis lost it: read it again
                price = redis_state.price_refresh(model, result[1])
            else:
                break
        else:
            raise service_unavailable("Billing is busy; try again in a moment.")
    except RedisError:
        raise service_unavailable(
            "Billing is unavailable, so the request cannot be admitted. Try again shortly."
        ) from None
    reservation = _reservation(api_key, model, price, request_id, prompt_tokens, max_tokens)
    if result[0] == "ok":
        remaining = int(result[1])
        return Reservation(
            **{
                **reservation.as_dict(),
                "tpm_remaining": None if remaining < 0 else remaining,
                "tpm_reset_seconds": int(result[2]),
            }
        )
    raise _refusal(
        result,
        api_key=api_key,
        worst=worst,
        tokens=prompt_tokens + max_tokens,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
    )


def _reservation(api_key, model, price, request_id, prompt_tokens, max_tokens, reserved=True) -> Reservation:
    return Reservation(
        request_id=request_id,
        user_id=api_key.user_id,
        api_key_id=api_key.pk,
        model=model.model_id,
        price_version_id=price.pk,
        worst_case=selectors.request_cost(price, prompt_tokens, max_tokens),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        tpm_limit=api_key.tpm,
        reserved=reserved,
    )


def _refusal(result: list[str], *, api_key, worst: Decimal, tokens: int, prompt_tokens: int, max_tokens: int):
    reason, figure = result[0], int(result[1])
    if reason == "balance":
        return AdmissionRefused(
            f"Your credit balance ({usd(max(from_units(figure), Decimal(0)))} available) does not cover this "
            f"request's worst case of {usd(worst)} ({prompt_tokens} prompt tokens and up to {max_tokens} "
            "completion tokens). Ask an operator for credits (your balance is on the Billing page), "
            "or lower max_tokens.",
            reason=reason,
            code="insufficient_quota",
        )
    if reason == "budget":
        period = {"day": "daily", "month": "monthly"}.get(api_key.budget_period, "total")
        return AdmissionRefused(
            f"This API key's {period} budget of {usd(api_key.max_budget)} is used up: {usd(from_units(figure))} "
            f"spent or reserved, and this request may cost up to {usd(worst)}. Raise the key's budget in the "
            "dashboard, lower max_tokens, or wait for the next period.",
            reason=reason,
            code="insufficient_quota",
        )
    headers = {}
    if reason == "tpm":
        reset = int(result[2])
        headers = {
            "x-ratelimit-limit-tokens": str(api_key.tpm),
            "x-ratelimit-remaining-tokens": str(max(api_key.tpm - figure, 0)),
            "x-ratelimit-reset-tokens": f"{reset}s",
        }
        message = (
            f"Rate limit reached for this API key: {api_key.tpm} tokens per minute (prompt plus max_tokens). "
            f"{figure} are used in this minute and this request needs {tokens}. "
        )
        message += (
            f"Try again in {reset}s, lower max_tokens, or raise the key's limit."
            if tokens <= api_key.tpm
            else "This request alone exceeds the limit: lower max_tokens or raise the key's limit."
        )
        return AdmissionRefused(message, reason=reason, code="rate_limit_exceeded", retry_after=reset, headers=headers)
    if reason == "account_parallel":
        return AdmissionRefused(
            f"Your account already has {figure} requests in flight, the most one account may have "
            f"({settings.ACCOUNT_MAX_IN_FLIGHT}), so that no tenant takes the whole fleet. Wait for one to finish.",
            reason=reason,
            code="rate_limit_exceeded",
            retry_after=1,
        )
    return AdmissionRefused(
        f"This API key already has {figure} requests in flight, its limit (max_parallel {api_key.max_parallel}). "
        "Wait for one to finish, or raise the key's limit.",
        reason=reason,
        code="rate_limit_exceeded",
        retry_after=1,
    )


def settle(
    reservation: Reservation,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    charge: bool = True,
    produced: dict[str, int] | None = None,
    **usage_fields,
):
    """Charge a request for the tokens it used and free its reservation.

    Writes the usage record (``inference.services.usage_record``; ``usage_fields`` are its other
    fields: endpoint, status_code, latency_ms, …) and the charge, at the reservation's price
    version, in one transaction; then frees the reservation (giving unused tokens back to the
    key's TPM window). Tokens are billed as given: pass what the engine reported, and for a stream
    cut short what the client was sent. ``charge=False`` records the usage at no cost (a request
    that failed before the client got anything). Idempotent per request id. Returns the
    UsageRecord, whose ``cost`` is the charge.

    A request served on community nodes also credits their hosts' earnings in the same transaction
    (``marketplace.services.earnings_credit``); ``produced`` maps each node that sent text to the
    completion tokens of it the client got, when more than one did (a failover mid-stream).
    """
    from accounts.models import ApiKey
    from billing.models import PriceVersion
    from inference.services import usage_record

    price = PriceVersion.objects.get(pk=reservation.price_version_id) if reservation.price_version_id else None
    cost = selectors.request_cost(price, prompt_tokens, completion_tokens) if price and charge else Decimal("0")
    usage_fields.setdefault("model", reservation.model)
    with transaction.atomic():
        record = usage_record(
            request_id=reservation.request_id,
            user_id=reservation.user_id,
            api_key_id=reservation.api_key_id,
            price_version=price,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=cost,
            **usage_fields,
        )
        if settings.BILLING_ENABLED:  # off (benchmarks only): usage is recorded, nobody is charged
            api_key = ApiKey.objects.select_related("user").get(pk=reservation.api_key_id)
            services.request_charge(
                user=api_key.user, request_id=reservation.request_id, cost=record.cost, api_key=api_key
            )
            from marketplace.services import earnings_credit  # GPU host marketplace

            earnings_credit(record=record, price=price, produced=produced)
        used = prompt_tokens + completion_tokens if charge else 0
        unused = max(reservation.prompt_tokens + reservation.max_tokens - used, 0)
        # After the charge is applied (on_commit callbacks run in order): never a moment with neither.
        transaction.on_commit(lambda: _free(reservation, unused_tokens=unused))
    return record


def release(reservation: Reservation) -> None:
    """Free a reservation without charging (the request failed or was cancelled before any output).

    Gives all its tokens back to the TPM window. Idempotent; a no-op for an expired reservation.
    """
    _free(reservation, unused_tokens=reservation.prompt_tokens + reservation.max_tokens)


def _free(reservation: Reservation, *, unused_tokens: int) -> None:
    if not reservation.reserved:
        return
    try:
        redis_state.settle_script(reservation.user_id, request_id=reservation.request_id, unused_tokens=unused_tokens)
    except RedisError:
        # The reservation expires by itself after BILLING_RESERVATION_TTL.
        redis_state.logger.exception("Could not free the reservation of %s", reservation.request_id)

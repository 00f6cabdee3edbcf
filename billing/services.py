"""Writes of money: every movement is a ledger entry, posted with the balance in one transaction.

Each function is idempotent on its idempotency key: posting the same key again returns the entry
already posted (and refuses a different amount or account under the same key). After the
transaction commits, the entry is applied to the derived Redis state (billing.redis_state).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import redis_state
from billing.models import BillingAccount, DynamicPrice, LedgerEntry, PriceVersion
from billing.money import to_money, usd

logger = logging.getLogger(__name__)

Kind = LedgerEntry.Kind


def account_ensure(user) -> BillingAccount:
    """The user's billing account, created with a zero balance if it has none yet."""
    account, _ = BillingAccount.objects.get_or_create(user=user)
    return account


def ledger_post(
    *,
    user,
    amount: Decimal,
    kind: str,
    idempotency_key: str,
    reference: str = "",
    note: str = "",
    api_key=None,
    created_by=None,
    floor: Decimal | None = None,
    at: datetime | None = None,
) -> LedgerEntry:
    """Append one entry and move the account's balance by ``amount`` in the same transaction.

    ``floor``: refuse (ValidationError) when the new balance would be below it. Returns the
    existing entry when ``idempotency_key`` was posted before.
    """
    amount = to_money(amount)
    try:
        with transaction.atomic():
            account_ensure(user)
            # The row lock serialises the account's entries: versions follow commit order.
            account = BillingAccount.objects.select_for_update().get(user=user)
            existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
            if existing is not None:
                return _same_entry(existing, user=user, amount=amount)
            balance = account.balance + amount
            if floor is not None and balance < floor:
                raise ValidationError(
                    f"This would take the balance of {user} from {usd(account.balance)} to {usd(balance)}, "
                    f"below {usd(floor)}. Adjust by at most {usd(account.balance - floor)}."
                )
            version = account.version + 1
            BillingAccount.objects.filter(pk=account.pk).update(
                balance=balance, version=version, updated_at=timezone.now()
            )
            entry = LedgerEntry.objects.create(
                account=user,
                amount=amount,
                kind=kind,
                idempotency_key=idempotency_key,
                reference=reference,
                note=note[:500],
                api_key=api_key,
                created_by=created_by,
                balance_after=balance,
                account_version=version,
                created_at=at or timezone.now(),
            )
            transaction.on_commit(lambda: redis_state.apply_entry(entry))
    except IntegrityError:
        # Another account posted this key at the same moment (the row lock covers one account only).
        existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _same_entry(existing, user=user, amount=amount)
    return entry


def _same_entry(entry: LedgerEntry, *, user, amount: Decimal) -> LedgerEntry:
    if entry.account_id != user.pk or entry.amount != amount:
        raise ValidationError(
            f"The idempotency key '{entry.idempotency_key}' was already used for {usd(entry.amount)} "
            f"on another posting; use a new key for a new movement of money."
        )
    return entry


def _positive(amount: Decimal, what: str) -> Decimal:
    amount = to_money(amount)
    if amount <= 0:
        raise ValidationError(f"A {what} must be a positive amount.")
    return amount


def credit_grant(
    *, user, amount: Decimal, created_by=None, note: str = "", idempotency_key: str | None = None
) -> LedgerEntry:
    """Staff give credits (positive). ``idempotency_key`` lets a form or script retry safely."""
    return ledger_post(
        user=user,
        amount=_positive(amount, "credit grant"),
        kind=Kind.GRANT,
        idempotency_key=idempotency_key or f"grant:{uuid.uuid4().hex}",
        note=note,
        created_by=created_by,
    )


def adjustment(
    *, user, amount: Decimal, created_by=None, note: str = "", idempotency_key: str | None = None
) -> LedgerEntry:
    """A staff correction, either sign; a negative one is refused if it would take the balance below zero."""
    amount = to_money(amount)
    if amount == 0:
        raise ValidationError("An adjustment of zero changes nothing.")
    return ledger_post(
        user=user,
        amount=amount,
        kind=Kind.ADJUSTMENT,
        idempotency_key=idempotency_key or f"adjustment:{uuid.uuid4().hex}",
        note=note,
        created_by=created_by,
        floor=Decimal("0") if amount < 0 else None,
    )


def staff_credit(*, user, amount: Decimal, created_by=None, note: str = "", idempotency_key: str | None = None):
    """What the dashboard, admin and ``manage.py credits --add`` do: a positive amount is a grant,
    a negative one an adjustment (refused below zero)."""
    amount = to_money(amount)
    post = credit_grant if amount > 0 else adjustment
    return post(user=user, amount=amount, created_by=created_by, note=note, idempotency_key=idempotency_key)


def topup(*, user, amount: Decimal, provider: str, event_id: str, note: str = "") -> LedgerEntry:
    """A paid top-up: the one function a payment provider's webhook calls.

    Idempotent on the provider's event id: a webhook delivered twice credits once.
    """
    return ledger_post(
        user=user,
        amount=_positive(amount, "top-up"),
        kind=Kind.TOPUP,
        idempotency_key=f"topup:{provider}:{event_id}",
        reference=event_id,
        note=note or f"Top-up via {provider}",
    )


def signup_credit_grant(user) -> LedgerEntry | None:
    """Give a new account ``SIGNUP_CREDIT_USD`` (once per user; nothing when the setting is 0)."""
    amount = to_money(settings.SIGNUP_CREDIT_USD)
    if amount <= 0:
        account_ensure(user)
        return None
    return ledger_post(
        user=user, amount=amount, kind=Kind.GRANT, idempotency_key=f"signup:{user.pk}", note="Signup credit"
    )


def request_charge(
    *, user, request_id: str, cost: Decimal, api_key=None, note: str = "", at: datetime | None = None
) -> LedgerEntry | None:
    """Charge one request: at most once per request id. Nothing is posted for a zero cost."""
    cost = to_money(cost)
    if cost < 0:
        raise ValidationError("A request's cost cannot be negative; post a refund instead.")
    if cost == 0:
        return None
    return ledger_post(
        user=user,
        amount=-cost,
        kind=Kind.CHARGE,
        idempotency_key=f"charge:{request_id}",
        reference=request_id,
        api_key=api_key,
        note=note,
        at=at,
    )


def request_refund(*, request_id: str, amount: Decimal | None = None, created_by=None, note: str = "") -> LedgerEntry:
    """Refund a charged request, wholly or in part (once per request id)."""
    charge = LedgerEntry.objects.select_related("account", "api_key").get(idempotency_key=f"charge:{request_id}")
    amount = -charge.amount if amount is None else _positive(amount, "refund")
    if amount > -charge.amount:
        raise ValidationError(f"A refund cannot exceed the charge of {usd(-charge.amount)}.")
    return ledger_post(
        user=charge.account,
        amount=amount,
        kind=Kind.REFUND,
        idempotency_key=f"refund:{request_id}",
        reference=request_id,
        api_key=charge.api_key,
        created_by=created_by,
        note=note,
    )


PRICE_PLACES = Decimal("0.0001")
MULTIPLIER_PLACES = Decimal("0.001")


def _multiplier_in_force(model, current: PriceVersion | None) -> Decimal:
    """A model without a dynamic price pays 1x; one with keeps its multiplier, within its bounds."""
    dynamic = DynamicPrice.objects.filter(model=model, enabled=True).first()
    if dynamic is None:
        return Decimal("1")
    multiplier = current.multiplier if current is not None else dynamic.floor
    return min(max(multiplier, dynamic.floor), dynamic.ceiling)


def price_version_record(model, multiplier: Decimal | None = None) -> PriceVersion:
    """Start a new price version for a catalog model if its prices differ from the one in force:
    the catalog's prices times ``multiplier`` (default: the one in force, see _multiplier_in_force).

    Past requests keep the version they were admitted under; only later ones see the new prices.
    """
    with transaction.atomic():
        current = PriceVersion.objects.filter(model=model).order_by("-effective_from", "-id").first()
        if multiplier is None:
            multiplier = _multiplier_in_force(model, current)
        multiplier = Decimal(multiplier).quantize(MULTIPLIER_PLACES, ROUND_HALF_UP)
        prices = (
            (model.price_input_per_million * multiplier).quantize(PRICE_PLACES, ROUND_HALF_UP),
            (model.price_output_per_million * multiplier).quantize(PRICE_PLACES, ROUND_HALF_UP),
        )
        if current is not None and (
            current.price_input_per_million,
            current.price_output_per_million,
            current.multiplier,
        ) == (*prices, multiplier):
            return current
        version = PriceVersion.objects.create(
            model=model,
            model_name=model.model_id,
            price_input_per_million=prices[0],
            price_output_per_million=prices[1],
            multiplier=multiplier,
            effective_from=timezone.now(),
        )
        transaction.on_commit(lambda: redis_state.price_publish(version))
    return version

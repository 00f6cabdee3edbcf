"""Reads of money: balances, spend, the ledger, prices in force, and reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection
from django.db.models import QuerySet, Sum
from django.utils import timezone

from billing.models import BillingAccount, LedgerEntry, PriceVersion
from billing.money import plain, round_money

Kind = LedgerEntry.Kind
#: Entries that count as a key's spend: charges, less what was refunded of them.
SPEND_KINDS = (Kind.CHARGE, Kind.REFUND)
MILLION = Decimal(1_000_000)


def balance_of(user) -> Decimal:
    account = BillingAccount.objects.filter(user=user).only("balance").first()
    return account.balance if account else Decimal("0")


def ledger_for_user(user) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(account=user).select_related("api_key", "created_by")


def _spend(entries: QuerySet[LedgerEntry]) -> Decimal:
    return -_total(entries.filter(kind__in=SPEND_KINDS))


def _total(entries: QuerySet[LedgerEntry]) -> Decimal:
    if connection.vendor == "sqlite":
        # SQLite sums decimals as floats, which drift on large balances: add them up exactly here.
        return sum(entries.values_list("amount", flat=True).iterator(), Decimal("0"))
    return entries.aggregate(total=Sum("amount"))["total"] or Decimal("0")


def month_start(at: datetime | None = None) -> datetime:
    at = (at or timezone.now()).astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spend_since(user, start: datetime) -> Decimal:
    return _spend(LedgerEntry.objects.filter(account=user, created_at__gte=start))


def spend_this_month(user) -> Decimal:
    return spend_since(user, month_start())


def spend_by_day(user, days: int = 30) -> list[tuple[str, Decimal]]:
    """Spend per UTC day for the last ``days`` days, oldest first, days without spend included."""
    from datetime import timedelta

    from django.db.models.functions import TruncDate

    today = timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    rows = (
        LedgerEntry.objects.filter(account=user, kind__in=SPEND_KINDS, created_at__date__gte=first)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values_list("day", "amount")
    )
    by_day: dict = {}
    for day, amount in rows.iterator():  # summed here: exact on SQLite too (see _total)
        by_day[day] = by_day.get(day, Decimal("0")) - amount
    return [(str(first + timedelta(n)), by_day.get(first + timedelta(n), Decimal("0"))) for n in range(days)]


# --- Key budget periods ---------------------------------------------------------------------


def period_start(period: str, at: datetime) -> datetime | None:
    """Where a budget period that contains ``at`` began (UTC); None for ``total``."""
    at = at.astimezone(UTC)
    if period == "day":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return month_start(at)
    return None


def period_id(period: str, at: datetime) -> str:
    """A name for the budget period that contains ``at``: d20261201, m202612 or t."""
    at = at.astimezone(UTC)
    return {"day": f"d{at:%Y%m%d}", "month": f"m{at:%Y%m}"}.get(period, "t")


def key_spend(api_key, at: datetime | None = None, *, up_to_version: int | None = None) -> Decimal:
    """What the key spent in its budget period containing ``at`` (default now).

    ``up_to_version``: only entries up to that account version (what billing.redis_state loads).
    """
    at = at or timezone.now()
    entries = LedgerEntry.objects.filter(api_key=api_key)
    start = period_start(api_key.budget_period, at)
    if start is not None:
        entries = entries.filter(created_at__gte=start)
    if up_to_version is not None:
        entries = entries.filter(account_version__lte=up_to_version)
    return _spend(entries)


# --- Prices ---------------------------------------------------------------------------------


def price_in_force(model, at: datetime | None = None) -> PriceVersion | None:
    """The price version of ``model`` (a CatalogModel) in force at ``at`` (default now)."""
    return (
        PriceVersion.objects.filter(model=model, effective_from__lte=at or timezone.now())
        .order_by("-effective_from", "-id")
        .first()
    )


def price_history(model) -> QuerySet[PriceVersion]:
    return PriceVersion.objects.filter(model=model).order_by("-effective_from", "-id")


def request_cost(price_version: PriceVersion, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """USD for a request's tokens at a price version, rounded half up to 8 places."""
    return round_money(
        (
            price_version.price_input_per_million * prompt_tokens
            + price_version.price_output_per_million * completion_tokens
        )
        / MILLION
    )


# --- Reconciliation -------------------------------------------------------------------------


def reconciliation_differences() -> list[str]:
    """Every way the stored figures disagree with the ledger, as sentences (empty: all agree).

    Checks each account's balance against the sum of its entries, and each request's charge
    against its usage record's cost (a usage record with a cost needs exactly that charge, and a
    charge needs a usage record).
    """
    differences = []
    sums: dict[int, Decimal] = {}
    if connection.vendor == "sqlite":  # exact sums (see _total)
        for account, amount in LedgerEntry.objects.order_by().values_list("account", "amount").iterator():
            sums[account] = sums.get(account, Decimal("0")) + amount
    else:
        sums = dict(LedgerEntry.objects.order_by().values_list("account").annotate(total=Sum("amount")))
    accounts = BillingAccount.objects.select_related("user").order_by("user_id")
    seen = set()
    for account in accounts:
        seen.add(account.user_id)
        total = sums.get(account.user_id) or Decimal("0")
        if total != account.balance:
            differences.append(
                f"account {account.user}: balance {plain(account.balance)} but its ledger sums to {plain(total)} "
                f"(difference {plain(account.balance - total)})"
            )
    for user_id in sorted(set(sums) - seen):
        differences.append(
            f"user id {user_id}: ledger entries sum to {plain(sums[user_id])} but there is no billing account"
        )

    from inference.models import UsageRecord

    charges = {
        reference: -amount
        for reference, amount in LedgerEntry.objects.filter(kind=Kind.CHARGE)
        .order_by()
        .values_list("reference", "amount")
        .iterator()
    }
    for request_id, cost in UsageRecord.objects.exclude(cost=0).order_by().values_list("request_id", "cost").iterator():
        charged = charges.pop(request_id, None)
        if charged is None:
            differences.append(f"request {request_id}: usage record costs {plain(cost)} but it has no charge")
        elif charged != cost:
            differences.append(
                f"request {request_id}: charged {plain(charged)} but its usage record costs {plain(cost)} "
                f"(difference {plain(charged - cost)})"
            )
    # What is left was charged, but its usage record costs nothing or is missing.
    left = sorted(charges)
    for start in range(0, len(left), 500):
        chunk = left[start : start + 500]
        free = set(UsageRecord.objects.filter(request_id__in=chunk).values_list("request_id", flat=True))
        for request_id in chunk:
            record = "its usage record costs 0" if request_id in free else "it has no usage record"
            differences.append(f"request {request_id}: charged {plain(charges[request_id])} but {record}")
    return differences


def key_budgets(user) -> list:
    """The user's active keys that have a budget, with their spend this period (see below)."""
    from accounts.models import ApiKey

    return keys_with_budget_spend(ApiKey.objects.filter(user=user, max_budget__isnull=False, revoked_at__isnull=True))


def models_with_prices() -> list:
    """Every catalog model with its aliases and the prices in force now (the Models & pricing page)."""
    from billing.models import DynamicPrice
    from deployments.models import CatalogModel

    models = list(CatalogModel.objects.prefetch_related("aliases").order_by("model_id"))
    dynamic = {d.model_id: d for d in DynamicPrice.objects.filter(enabled=True)}
    for model in models:
        model.price = price_in_force(model)
        floating = dynamic.get(model.pk)
        # The multiplier in force and its bounds, when the model's price floats with demand.
        model.demand = (
            {
                "multiplier": _short(model.price.multiplier if model.price else Decimal(1)),
                "floor": _short(floating.floor),
                "ceiling": _short(floating.ceiling),
            }
            if floating
            else None
        )
    return models


def _short(number: Decimal) -> str:
    """1.250 -> 1.25, 2.000 -> 2."""
    return f"{number.normalize():f}"


def model_pricing(model) -> dict:
    """A model's prices in force as ``GET /v1/models`` shows them (USD per million tokens)."""
    version = price_in_force(model)
    if version is None:
        return {
            "input_per_million": float(model.price_input_per_million),
            "output_per_million": float(model.price_output_per_million),
            "multiplier": 1.0,
        }
    return {
        "input_per_million": float(version.price_input_per_million),
        "output_per_million": float(version.price_output_per_million),
        "multiplier": float(version.multiplier),
    }


def keys_with_budget_spend(keys) -> list:
    """The keys, each with ``period_spend`` (its spend this budget period), ``budget_percent``, and
    whether that reached its notice threshold (``budget_notice``) or its budget (``budget_exhausted``)."""
    keys = list(keys)
    now = timezone.now()
    for api_key in keys:
        api_key.period_spend = api_key.budget_percent = api_key.budget_notice = api_key.budget_exhausted = None
        if api_key.max_budget is not None:
            api_key.period_spend = key_spend(api_key, now)
            used = api_key.period_spend * 100 / api_key.max_budget if api_key.max_budget > 0 else 100
            api_key.budget_percent = int(used)
            api_key.budget_notice = used >= api_key.budget_soft_percent
            api_key.budget_exhausted = api_key.period_spend >= api_key.max_budget
    return keys

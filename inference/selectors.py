"""Reads of usage records."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connections
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour

from inference.models import UsageRecord


def usage_for_user(
    user,
    *,
    key_prefix: str | None = None,
    model: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(user=user).select_related("api_key")
    if key_prefix:
        records = records.filter(api_key__prefix=key_prefix.removeprefix("gpc_"))
    if model:
        records = records.filter(model=model)
    if start:
        records = records.filter(created_at__gte=start)
    if end:
        records = records.filter(created_at__lt=end)
    return records


def usage_totals(records: QuerySet[UsageRecord]) -> dict:
    totals = records.aggregate(
        requests=Count("id"),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        cost=Sum("cost"),
    )
    return {name: value or 0 for name, value in totals.items()}


def usage_by_model(records: QuerySet[UsageRecord]) -> list[dict]:
    return list(
        records.order_by()
        .values("model")
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("model")
    )


# --- The Usage page: series per hour or day, per model, latency percentiles, error rate ----------------

#: Costs are kept to 8 places (UsageRecord.cost); SQLite's sums carry float noise beyond them.
CENTS_MILLIONTHS = Decimal("0.00000001")

#: Most buckets a series may have: an hourly series longer than this is drawn per day instead.
MAX_HOURLY_BUCKETS = 24 * 31


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


def percentile(sorted_values: list, fraction: float) -> float | None:
    """The ``fraction`` percentile of ascending values, interpolated as ``percentile_cont`` does
    (position ``fraction * (n - 1)``), so both databases give the same figure. None when empty."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low))


LATENCY_FIELDS = {"latency": "latency_ms", "ttft": "time_to_first_token_ms"}
FRACTIONS = {"p50": 0.5, "p95": 0.95}


def latency_percentiles(records: QuerySet[UsageRecord], *, by: str | None = None) -> dict:
    """p50 and p95 of the end-to-end latency and of the time to first token (ms) of the requests
    that succeeded (a refusal's few milliseconds are no latency): ``{"latency_p50": …, "latency_p95":
    …, "ttft_p50": …, "ttft_p95": …}``, or with ``by`` (a field name) one such dict per value of it.

    PostgreSQL computes them with ``percentile_cont``; other databases (SQLite) in Python over the
    rows, sorted by the database, of the period the caller bounded ``records`` to.
    """
    served = records.filter(status_code__lt=400).order_by()
    names = [f"{short}_{p}" for short in LATENCY_FIELDS for p in FRACTIONS]
    if connections[records.db].vendor == "postgresql":
        aggregates = {
            f"{short}_{p}": PercentileCont(field, fraction)
            for short, field in LATENCY_FIELDS.items()
            for p, fraction in FRACTIONS.items()
        }
        if by is None:
            return served.aggregate(**aggregates)
        return {row.pop(by): row for row in served.values(by).annotate(**aggregates).order_by(by)}
    groups: dict = defaultdict(lambda: {short: [] for short in LATENCY_FIELDS})
    for short, field in LATENCY_FIELDS.items():
        columns = [by, field] if by else [field]
        rows = served.filter(**{f"{field}__isnull": False}).order_by(*columns).values_list(*columns)
        for row in rows.iterator(chunk_size=5000):
            groups[row[0] if by else None][short].append(row[-1])
    result = {
        group: {f"{short}_{p}": percentile(values[short], f) for short in LATENCY_FIELDS for p, f in FRACTIONS.items()}
        for group, values in groups.items()
    }
    if by is None:
        return result.get(None, dict.fromkeys(names))
    return result


def usage_series_resolution(start: datetime, end: datetime, requested: str | None = None) -> str:
    """``"hour"`` or ``"day"``: as requested, else hourly for up to two days; never more than
    MAX_HOURLY_BUCKETS hours."""
    hours = (end - start).total_seconds() / 3600
    if requested == "day" or hours > MAX_HOURLY_BUCKETS:
        return "day"
    if requested == "hour":
        return "hour"
    return "hour" if hours <= 48 else "day"


def _bucket_start(moment: datetime, per: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if per == "day" else moment


def usage_series(records: QuerySet[UsageRecord], *, start: datetime, end: datetime, per: str) -> dict:
    """Requests, errors, tokens and cost per hour or day (UTC) and per model, counted by the
    database, every bucket from ``start`` to ``end`` present (zero when idle)::

        {"per": "hour", "buckets": ["2026-12-01T10:00:00+00:00", …],
         "models": {"llama-3.1-8b-instruct": {"requests": [..], "errors": [..], "tokens": [..],
                                              "cost": ["0.00001200", ..]}, …}}

    Costs are exact decimal strings (the chart script turns them into numbers only to draw).
    ``rows`` holds the same per bucket over all models (datetimes and Decimals), for a table.
    """
    trunc = TruncDay if per == "day" else TruncHour
    step = timedelta(days=1) if per == "day" else timedelta(hours=1)
    buckets = []
    moment = _bucket_start(start, per)
    while moment <= end:
        buckets.append(moment)
        moment += step
    index = {bucket: i for i, bucket in enumerate(buckets)}
    rows = (
        records.order_by()
        .annotate(bucket=trunc("created_at", tzinfo=UTC))
        .values("bucket", "model")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            cost=Sum("cost"),
        )
    )
    models: dict[str, dict] = {}
    for row in rows:
        i = index.get(_bucket_start(row["bucket"], per))
        if i is None:  # outside the period asked for
            continue
        name = row["model"] or "(none)"
        series = models.setdefault(
            name,
            {
                "requests": [0] * len(buckets),
                "errors": [0] * len(buckets),
                "tokens": [0] * len(buckets),
                "cost": [Decimal(0)] * len(buckets),
            },
        )
        series["requests"][i] += row["requests"]
        series["errors"][i] += row["errors"]
        series["tokens"][i] += row["tokens"] or 0
        series["cost"][i] += (row["cost"] or Decimal(0)).quantize(CENTS_MILLIONTHS)
    rows = [
        {
            "bucket": bucket,
            **{
                name: sum((series[name][i] for series in models.values()), Decimal(0) if name == "cost" else 0)
                for name in ("requests", "errors", "tokens", "cost")
            },
        }
        for i, bucket in enumerate(buckets)
    ]
    for series in models.values():
        series["cost"] = [f"{cost.quantize(CENTS_MILLIONTHS):f}" for cost in series["cost"]]
    return {
        "per": per,
        "buckets": [bucket.isoformat() for bucket in buckets],
        "models": dict(sorted(models.items())),
        "rows": rows,
    }


def usage_overview(records: QuerySet[UsageRecord]) -> dict:
    """The period's totals, error rate and latency percentiles, and the same per model."""
    totals = usage_totals(records)
    totals["errors"] = records.filter(status_code__gte=400).count()
    totals["error_rate"] = totals["errors"] / totals["requests"] if totals["requests"] else None
    totals["error_percent"] = None if totals["error_rate"] is None else round(totals["error_rate"] * 100, 1)
    totals.update(latency_percentiles(records))
    latency_by_model = latency_percentiles(records, by="model")
    by_model = list(
        records.order_by()
        .values("model")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("model")
    )
    for row in by_model:
        row["error_rate"] = row["errors"] / row["requests"]
        row["error_percent"] = round(row["error_rate"] * 100, 1)
        row.update(latency_by_model.get(row["model"]) or dict.fromkeys(["latency_p50", "latency_p95"]))
    return {"totals": totals, "by_model": by_model}


def usage_models_for_user(user) -> list[str]:
    """The models the user's usage can be filtered by: those of their requests that name a model
    in the catalog or that were served (not a misspelt name that got a 404)."""
    from deployments.models import CatalogModel

    used = UsageRecord.objects.filter(user=user).exclude(model="").order_by()
    catalog = CatalogModel.objects.values("model_id")
    real = used.filter(Q(model__in=catalog) | Q(status_code__lt=400)).values_list("model", flat=True).distinct()
    return sorted(set(real))


USAGE_CSV_COLUMNS = [
    "request_id", "created_at", "key_name", "key", "endpoint", "model", "deployment", "worker", "stream",
    "status_code", "error_code", "prompt_tokens", "completion_tokens", "latency_ms", "time_to_first_token_ms",
    "cost_usd",
]  # fmt: skip


def usage_csv_rows(records: QuerySet[UsageRecord]):
    """The usage export's rows (under USAGE_CSV_COLUMNS), newest first, read in chunks."""
    for record in records.select_related("api_key").order_by("-created_at").iterator(chunk_size=1000):
        yield [
            record.request_id,
            record.created_at.isoformat(),
            record.api_key.name if record.api_key else "",
            record.api_key.display_prefix if record.api_key else "",
            record.endpoint,
            record.model,
            record.deployment,
            record.worker,
            record.stream,
            record.status_code,
            record.error_code,
            record.prompt_tokens,
            record.completion_tokens,
            record.latency_ms,
            "" if record.time_to_first_token_ms is None else record.time_to_first_token_ms,
            f"{record.cost:f}",
        ]

"""Reads of usage records."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, QuerySet, Sum

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

"""Writes for inference: usage records."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from inference.models import UsageRecord


def usage_record(*, request_id: str, **fields) -> UsageRecord:
    """Record a request's usage once; a second call for the same request id changes nothing."""
    try:
        with transaction.atomic():
            record, _ = UsageRecord.objects.get_or_create(request_id=request_id, defaults=fields)
    except IntegrityError:  # a concurrent writer won the race
        record = UsageRecord.objects.get(request_id=request_id)
    return record

"""The management API (DRF, key auth with the ``management`` scope): ``GET /api/usage``."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from accounts.api import ManagementAPIView
from gpucloud.openai_errors import invalid_request
from inference.models import UsageRecord
from inference.selectors import usage_for_user, usage_totals


class UsageRecordSerializer(serializers.ModelSerializer):
    key = serializers.SerializerMethodField()
    total_tokens = serializers.IntegerField(read_only=True)
    cost = serializers.DecimalField(max_digits=14, decimal_places=8, coerce_to_string=False)

    class Meta:
        model = UsageRecord
        fields = [
            "request_id", "created_at", "key", "endpoint", "model", "deployment", "worker", "stream",
            "status_code", "error_code", "prompt_tokens", "completion_tokens", "total_tokens",
            "latency_ms", "time_to_first_token_ms", "cost",
        ]  # fmt: skip

    def get_key(self, record: UsageRecord) -> str | None:
        return record.api_key.display_prefix if record.api_key else None


def _parse_time(value: str | None, param: str) -> datetime | None:
    """Accept ISO 8601 or Unix seconds; naive times are UTC."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise invalid_request(f"'{param}' must be an ISO 8601 time or Unix seconds, got '{value[:100]}'.", param=param)
    try:
        # In UTC, as the database compares it: 0001-01-01T00:00:00+01:00 falls before year 1.
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        raise invalid_request(f"'{param}' is out of range, got '{value[:100]}'.", param=param) from None


class UsagePagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000


class UsageView(ManagementAPIView):
    """Usage records of the key owner's requests, newest first, with totals.

    Filters: ``key`` (key prefix, e.g. gpc_1a2b3c4d5e6f), ``model``, ``start`` and ``end``
    (ISO 8601 or Unix seconds; ``start`` inclusive, ``end`` exclusive); ``limit``/``offset`` page.
    """

    def get(self, request):
        start = _parse_time(request.query_params.get("start"), "start")
        end = _parse_time(request.query_params.get("end"), "end")
        if start and end and start >= end:
            raise invalid_request("'start' must be before 'end'.", param="start")
        records = usage_for_user(
            request.user,
            key_prefix=request.query_params.get("key"),
            model=request.query_params.get("model"),
            start=start,
            end=end,
        )
        paginator = UsagePagination()
        page = paginator.paginate_queryset(records, request, view=self)
        return Response(
            {
                "object": "list",
                "totals": usage_totals(records),
                "count": paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "data": UsageRecordSerializer(page, many=True).data,
            }
        )

"""The management API for money (key auth with the ``management`` scope):
``GET /api/balance`` and ``GET /api/ledger``."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from accounts.api import ManagementAPIView
from billing.models import LedgerEntry
from billing.selectors import balance_of, ledger_for_user, spend_this_month
from gpucloud.openai_errors import invalid_request

MONEY = {"max_digits": 18, "decimal_places": 8, "coerce_to_string": False}


class LedgerEntrySerializer(serializers.ModelSerializer):
    amount = serializers.DecimalField(**MONEY)
    balance_after = serializers.DecimalField(**MONEY)
    key = serializers.SerializerMethodField()

    class Meta:
        model = LedgerEntry
        fields = ["id", "created_at", "kind", "amount", "balance_after", "reference", "note", "key"]

    def get_key(self, entry: LedgerEntry) -> str | None:
        return entry.api_key.display_prefix if entry.api_key else None


class BalanceView(ManagementAPIView):
    """The key owner's credit balance and what they spent this calendar month (UTC), in USD."""

    def get(self, request):
        money = serializers.DecimalField(**MONEY)
        return Response(
            {
                "object": "balance",
                "currency": "usd",
                "balance": money.to_representation(balance_of(request.user)),
                "spend_this_month": money.to_representation(spend_this_month(request.user)),
            }
        )


class LedgerPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000


class LedgerView(ManagementAPIView):
    """The key owner's ledger entries, newest first; ``limit``/``offset`` page, ``kind`` filters."""

    def get(self, request):
        entries = ledger_for_user(request.user)
        kind = request.query_params.get("kind")
        if kind:
            if kind not in LedgerEntry.Kind.values:
                raise invalid_request(f"'kind' must be one of: {', '.join(LedgerEntry.Kind.values)}.", param="kind")
            entries = entries.filter(kind=kind)
        paginator = LedgerPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return Response(
            {
                "object": "list",
                "count": paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "data": LedgerEntrySerializer(page, many=True).data,
            }
        )

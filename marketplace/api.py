"""``GET /api/host/earnings``: a host's earnings, with its management key."""

from __future__ import annotations

from rest_framework.response import Response

from accounts.api import ManagementAPIView
from billing.money import plain
from gpucloud.openai_errors import ApiError
from marketplace import selectors


class HostEarningsView(ManagementAPIView):
    """Pending, available, held, in-payout and paid totals (USD, exact decimal strings), requests
    and tokens served, and figures per node and per UTC day (the last 30)."""

    def get(self, request):
        host = selectors.host_profile_of(request.user)
        if host is None:
            raise ApiError(
                "This account is not a host. Become one on the Host page (/host/) first.",
                status=404,
                code="not_a_host",
            )
        figures = selectors.host_earnings(host)
        balances = figures["balances"]
        return Response(
            {
                "object": "host.earnings",
                "host": host.display_name,
                "revenue_share": plain(host.revenue_share),
                "currency": "usd",
                **{name: plain(amount) for name, amount in balances.items()},
                "requests": figures["requests"],
                "tokens": figures["tokens"],
                "per_node": [
                    {
                        "node_id": row["id"],
                        "node": row["node"],
                        "earned": plain(row["earned"]),
                        "requests": row["requests"],
                        "tokens": row["tokens"],
                    }
                    for row in figures["per_node"]
                ],
                "per_model": [
                    {
                        "model": row["model"],
                        "earned": plain(row["earned"]),
                        "requests": row["requests"],
                        "tokens": row["tokens"],
                    }
                    for row in figures["per_model"]
                ],
                "per_day": [{"day": str(day), "earned": plain(amount)} for day, amount in figures["per_day"]],
            }
        )

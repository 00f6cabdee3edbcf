"""Reads of the marketplace: hosts' nodes and earnings, payouts, customers' trust choice."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from deployments.models import JoinToken, Trust, WorkerNode
from marketplace.models import AccountPreference, HostProfile


def host_profile_of(user) -> HostProfile | None:
    if not user.is_authenticated:
        return None
    return HostProfile.objects.filter(user=user).first()


def host_nodes(host: HostProfile) -> QuerySet[WorkerNode]:
    """The host's own nodes: community nodes it owns (joined with its tokens)."""
    return (
        WorkerNode.objects.filter(owner=host.user, trust=Trust.COMMUNITY)
        .select_related("join_token", "standing")
        .order_by("-registered_at")
    )


def host_node_or_404(host: HostProfile, node_id: int) -> WorkerNode:
    """One of the host's nodes; 404 for any other node (another host's, the operator's)."""
    node = host_nodes(host).filter(pk=node_id).first()
    if node is None:
        raise Http404("No such node.")
    return node


def host_tokens(host: HostProfile) -> QuerySet[JoinToken]:
    return JoinToken.objects.filter(created_by=host.user, trust=Trust.COMMUNITY).order_by("-created_at")


def host_token_or_404(host: HostProfile, token_id: int) -> JoinToken:
    token = host_tokens(host).filter(pk=token_id).first()
    if token is None:
        raise Http404("No such join token.")
    return token


def account_trusted_only(user_id: int) -> bool:
    return AccountPreference.objects.filter(user_id=user_id, trusted_only=True).exists()


def trusted_only_for(api_key) -> bool:
    """Whether a key's requests must stay on trusted nodes: the key's own choice or its account's."""
    return api_key.trusted_only or account_trusted_only(api_key.user_id)


def host_node_rows(host: HostProfile) -> list[dict]:
    """The host's nodes as its page shows them: status, trust, GPUs, standing, and what each earned."""
    from django.db.models import Count, Sum

    from marketplace.models import EarningEntry

    earned = {
        row["node"]: row
        for row in EarningEntry.objects.filter(host=host, kind=EarningEntry.Kind.EARNING)
        .values("node")
        .annotate(
            amount=Sum("amount"),
            requests=Count("request_id", distinct=True),
            tokens=Sum("completion_tokens"),
            prompt=Sum("prompt_tokens"),
        )
        .order_by()
    }
    rows = []
    for node in host_nodes(host):
        figures = earned.get(node.pk, {})
        standing = getattr(node, "standing", None)
        telemetry = node.telemetry or {}
        rows.append(
            {
                "node": node,
                "status": "suspended" if standing and standing.suspended_at else node.effective_status,
                "revoked": node.credential_revoked_at is not None,
                "gpus": telemetry.get("gpus") or node.gpus,
                "earned": figures.get("amount") or 0,
                "requests": figures.get("requests") or 0,
                "tokens": (figures.get("tokens") or 0) + (figures.get("prompt") or 0),
                "strikes": standing.strikes if standing else 0,
                "suspension_reason": standing.suspension_reason if standing and standing.suspended_at else "",
                "online_for": _online_for(node),
                # Its reliability (deployments.reliability): the score placement uses, and uptime
                # over the last RELIABILITY_WINDOW_DAYS.
                "reliability": node.reliability,
                "uptime": (node.reliability_detail or {}).get("uptime"),
            }
        )
    return rows


def _online_for(node: WorkerNode):
    """How long the node has been a member of the fleet, if it is online now (None otherwise)."""
    from django.utils import timezone

    if node.effective_status != WorkerNode.Status.ONLINE:
        return None
    return timezone.now() - node.registered_at


# --- Earnings ---------------------------------------------------------------------------------

EARNINGS_CHART_DAYS = 30


def _held_node_ids(host: HostProfile) -> set[int]:
    from marketplace.models import NodeStanding

    return set(
        NodeStanding.objects.filter(node__owner=host.user, suspended_at__isnull=False).values_list("node_id", flat=True)
    )


def host_balances(host: HostProfile, *, now=None) -> dict:
    """What the host is owed, in USD (Decimals): ``pending`` (within the hold), ``held`` (earned on
    a suspended node, for an operator to decide), ``available`` (may be paid out), ``in_payout``
    (asked for, not yet paid) and ``paid``. Summed in Python: exact on every database."""
    from decimal import Decimal

    from django.utils import timezone

    from marketplace.models import EarningEntry, Payout

    now = now or timezone.now()
    held_nodes = _held_node_ids(host)
    zero = Decimal("0")
    pending = held = matured = moved = zero
    rows = EarningEntry.objects.filter(host=host).values_list("kind", "amount", "available_at", "node_id")
    for kind, amount, available_at, node_id in rows.iterator():
        if kind == EarningEntry.Kind.EARNING:
            if node_id in held_nodes:
                held += amount
            elif available_at is not None and available_at > now:
                pending += amount
            else:
                matured += amount
        else:  # payout steps: a request takes from what is available, a rejection gives it back
            moved += amount
    payouts = Payout.objects.filter(host=host).values_list("status", "amount")
    in_payout = sum((a for s, a in payouts if s in (Payout.Status.REQUESTED, Payout.Status.APPROVED)), zero)
    paid = sum((a for s, a in payouts if s == Payout.Status.PAID), zero)
    return {
        "pending": pending,
        "held": held,
        "available": max(matured + moved, zero),
        "in_payout": in_payout,
        "paid": paid,
        "earned": pending + held + matured,
    }


def host_earnings(host: HostProfile, *, days: int = EARNINGS_CHART_DAYS, now=None) -> dict:
    """Everything the Host page and ``GET /api/host/earnings`` show about what the host earned:
    balances, totals, and figures per UTC day (the last ``days``, oldest first), model and node."""
    from datetime import UTC, timedelta
    from decimal import Decimal

    from django.utils import timezone

    from marketplace.models import EarningEntry

    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    zero = Decimal("0")
    by_day: dict = {}
    by_model: dict[str, dict] = {}
    by_node: dict[int | None, dict] = {}
    requests: set[str] = set()
    tokens = 0
    rows = EarningEntry.objects.filter(host=host, kind=EarningEntry.Kind.EARNING).values_list(
        "created_at", "amount", "model", "node_id", "node_name", "request_id", "prompt_tokens", "completion_tokens"
    )
    for created_at, amount, model, node_id, node_name, request_id, prompt, completion in rows.iterator():
        day = created_at.astimezone(UTC).date()
        if day >= first:
            by_day[day] = by_day.get(day, zero) + amount
        for bucket, key, label in ((by_model, model, "model"), (by_node, node_id, "node")):
            row = bucket.setdefault(
                key, {label: model if label == "model" else node_name, "earned": zero, "requests": set(), "tokens": 0}
            )
            row["earned"] += amount
            row["requests"].add(request_id)
            row["tokens"] += prompt + completion
        requests.add(request_id)
        tokens += prompt + completion
    for bucket in (by_model, by_node):
        for row in bucket.values():
            row["requests"] = len(row["requests"])
    for node_id, row in by_node.items():
        row["id"] = node_id
    return {
        "balances": host_balances(host, now=now),
        "requests": len(requests),
        "tokens": tokens,
        "per_day": [(first + timedelta(n), by_day.get(first + timedelta(n), zero)) for n in range(days)],
        "per_model": sorted(by_model.values(), key=lambda r: -r["earned"]),
        "per_node": sorted(by_node.values(), key=lambda r: -r["earned"]),
    }


def host_payouts(host: HostProfile):
    from marketplace.models import Payout

    return Payout.objects.filter(host=host).order_by("-requested_at", "-id")


def payouts_for_staff(status: str | None = None):
    from marketplace.models import Payout

    payouts = Payout.objects.select_related("host__user", "decided_by").order_by("-requested_at", "-id")
    return payouts.filter(status=status) if status else payouts


# --- Routing ----------------------------------------------------------------------------------


def _serving_on(trust: str):
    """Replicas loaded on live nodes of ``trust`` (not revoked, heard from recently)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from deployments.models import Replica

    recent = timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER)
    return Replica.objects.filter(
        state=Replica.State.RUNNING,
        node__trust=trust,
        node__status=WorkerNode.Status.ONLINE,
        node__credential_revoked_at__isnull=True,
        node__last_heartbeat_at__gte=recent,
    )


def trusted_deployment_for(model):
    """A serving deployment of ``model`` with a replica on a live trusted node, or None."""
    from deployments.selectors import serving_deployments

    deployments = _serving_on(Trust.TRUSTED).filter(deployment__model=model).values("deployment")
    return serving_deployments().filter(pk__in=deployments).order_by("created_at").first()


def community_capacity_models() -> set[str]:
    """The model ids with a replica on a live community node (the Models & pricing page says so)."""
    return set(_serving_on(Trust.COMMUNITY).values_list("deployment__model__model_id", flat=True))


def trusted_capacity_models() -> set[str]:
    return set(_serving_on(Trust.TRUSTED).values_list("deployment__model__model_id", flat=True))

"""The Host page (``/host/``): become a host, join machines with tokens of your own, see and
revoke your nodes, your earnings and payouts."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from billing.money import plain
from deployments.views import staff_required
from gpucloud.csv_export import csv_response
from marketplace import selectors, services
from marketplace.forms import (
    HostJoinTokenForm,
    HostProfileForm,
    PayoutDecisionForm,
    PayoutRequestForm,
    TrustedOnlyForm,
)
from marketplace.models import Payout

PAYOUTS_SHOWN = 20


def _earnings_context(host) -> dict:
    """The Host page's earnings: balances as exact strings, the per-day chart (for static/js/billing.js
    through json_script, like the Billing page's), per model and per node."""
    earnings = selectors.host_earnings(host)
    balances = earnings["balances"]
    minimum = Decimal(str(settings.PAYOUT_MINIMUM_USD))
    return {
        "earnings": earnings,
        "balances": {name: plain(amount) for name, amount in balances.items()},
        "chart": {
            "rows": [{"day": str(day), "usd": plain(amount)} for day, amount in earnings["per_day"]],
            "total": plain(sum((amount for _, amount in earnings["per_day"]), Decimal(0))),
        },
        "hold_days": settings.EARNINGS_HOLD_DAYS,
        "payout_minimum": plain(minimum),
        "can_request_payout": balances["available"] >= minimum,
    }


def _server_url(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def _host_page(request, *, host, token_form=None, profile_form=None, new_token=None, payout_form=None, status=200):
    context = {
        "host": host,
        "profile_form": profile_form or HostProfileForm(instance=host),
        "token_form": token_form or HostJoinTokenForm(),
        "new_token": new_token,
        "server_url": _server_url(request),
    }
    if host is not None:
        context.update(
            {
                "nodes": selectors.host_node_rows(host),
                "reliability_window_days": settings.RELIABILITY_WINDOW_DAYS,
                "tokens": selectors.host_tokens(host),
                **_earnings_context(host),
                "payout_form": payout_form or PayoutRequestForm(),
                "payouts": selectors.host_payouts(host)[:PAYOUTS_SHOWN],
            }
        )
    response = render(request, "marketplace/host.html", context, status=status)
    if new_token:
        add_never_cache_headers(response)  # keep the secret out of browser and proxy caches
    return response


@login_required
@require_http_methods(["GET", "POST"])
def host_page(request):
    """GET: the page (or the form to become a host). POST: become a host, or update the profile."""
    host = selectors.host_profile_of(request.user)
    if request.method == "POST":
        form = HostProfileForm(request.POST, instance=host)
        if not form.is_valid():
            return _host_page(request, host=host, profile_form=form, status=400)
        was_host = host is not None
        host = services.host_become(user=request.user, **form.cleaned_data)
        messages.success(request, "Profile saved." if was_host else "You are a host now: join a machine below.")
        return redirect("marketplace:host")
    return _host_page(request, host=host)


def _host_or_redirect(request):
    host = selectors.host_profile_of(request.user)
    if host is None:
        messages.error(request, "Become a host first.")
    return host


@login_required
@require_POST
def token_create(request):
    host = _host_or_redirect(request)
    if host is None:
        return redirect("marketplace:host")
    form = HostJoinTokenForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            _, plaintext = services.host_join_token_create(
                host=host,
                name=data["name"],
                expires_at=timezone.now() + timedelta(days=data["expires_in_days"]),
                max_uses=data["max_uses"],
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            # Rendered in this response only: the token is never stored, so it cannot be shown again.
            return _host_page(request, host=host, new_token=plaintext)
    return _host_page(request, host=host, token_form=form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def node_revoke(request, node_id: int):
    host = _host_or_redirect(request)
    if host is None:
        return redirect("marketplace:host")
    node = selectors.host_node_or_404(host, node_id)
    if request.method == "POST":
        services.host_node_revoke(host=host, node=node)
        messages.success(request, f"Revoked “{node.name}”. It stops taking work and cannot connect again.")
        return redirect("marketplace:host")
    return render(request, "marketplace/node_revoke.html", {"node": node})


@login_required
@require_POST
def token_revoke(request, token_id: int):
    host = _host_or_redirect(request)
    if host is None:
        return redirect("marketplace:host")
    token = selectors.host_token_or_404(host, token_id)
    services.host_token_revoke(host=host, token=token)
    messages.success(request, f"Revoked the join token “{token.name}”. Machines already joined keep running.")
    return redirect("marketplace:host")


def pricing_context(request) -> dict:
    """What the Models & pricing page shows of the marketplace: which models have community
    (and trusted) capacity now, and the account's trusted-only choice."""
    return {
        "community_models": selectors.community_capacity_models(),
        "trusted_models": selectors.trusted_capacity_models(),
        "trusted_only_form": TrustedOnlyForm(initial={"trusted_only": selectors.account_trusted_only(request.user.pk)}),
    }


@login_required
@require_POST
def trusted_only(request):
    form = TrustedOnlyForm(request.POST)
    form.is_valid()  # a checkbox: absent is False
    chosen = bool(form.cleaned_data.get("trusted_only"))
    services.account_trusted_only_set(user=request.user, trusted_only=chosen)
    messages.success(
        request,
        "Your requests now run on trusted nodes only." if chosen else "Your requests may run on community nodes too.",
    )
    return redirect(f"{reverse('billing:pricing')}#trusted-only")


# --- Payouts ----------------------------------------------------------------------------------


@login_required
@require_POST
def payout_request(request):
    host = _host_or_redirect(request)
    if host is None:
        return redirect("marketplace:host")
    form = PayoutRequestForm(request.POST)
    if form.is_valid():
        try:
            payout = services.payout_request(host=host, amount=form.cleaned_data["amount"])
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Payout #{payout.pk} of ${plain(payout.amount)} requested.")
            return redirect(f"{reverse('marketplace:host')}#payouts")
    return _host_page(request, host=host, payout_form=form, status=400)


@staff_required
def payouts_staff(request):
    """Every host's payouts, for staff to approve, mark paid or reject."""
    status = request.GET.get("status") or None
    if status not in Payout.Status.values:
        status = None
    return render(
        request,
        "marketplace/payouts.html",
        {
            "payouts": selectors.payouts_for_staff(status)[:200],
            "status": status,
            "statuses": Payout.Status.choices,
            "form": PayoutDecisionForm(),
        },
    )


@staff_required
@require_POST
def payout_decide(request, payout_id: int):
    payout = get_object_or_404(Payout, pk=payout_id)
    form = PayoutDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose approve, mark paid or reject.")
        return redirect("marketplace:payouts")
    action, reference, note = (form.cleaned_data[k] for k in ("action", "reference", "note"))
    try:
        if action == "approve":
            services.payout_approve(payout=payout, staff=request.user, note=note)
        elif action == "paid":
            services.payout_mark_paid(payout=payout, staff=request.user, reference=reference, note=note)
        else:
            services.payout_reject(payout=payout, staff=request.user, note=note)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Payout #{payout.pk}: {action if action != 'paid' else 'marked paid'}.")
    return redirect("marketplace:payouts")


@staff_required
def payouts_csv(request):
    """Every payout as CSV, streamed."""
    header = ["id", "host", "username", "amount_usd", "status", "requested_at", "decided_by", "decided_at",
              "paid_at", "reference", "payout_details", "note"]  # fmt: skip
    rows = (
        [
            p.pk,
            p.host.display_name,
            p.host.user.get_username(),
            f"{p.amount:f}",
            p.status,
            p.requested_at.isoformat(),
            p.decided_by.get_username() if p.decided_by else "",
            p.decided_at.isoformat() if p.decided_at else "",
            p.paid_at.isoformat() if p.paid_at else "",
            p.reference,
            p.payout_details,
            p.note,
        ]
        for p in selectors.payouts_for_staff().iterator()
    )
    return csv_response("payouts.csv", header, rows)

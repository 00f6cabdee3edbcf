"""The Host page (``/host/``): become a host, join machines with tokens of your own, see and
revoke your nodes, your earnings and payouts."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from marketplace import selectors, services
from marketplace.forms import HostJoinTokenForm, HostProfileForm, TrustedOnlyForm


def _server_url(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def _host_page(request, *, host, token_form=None, profile_form=None, new_token=None, status=200):
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
                "tokens": selectors.host_tokens(host),
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

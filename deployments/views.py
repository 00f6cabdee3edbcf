"""The operators' dashboard: the live fleet, join tokens, node credentials (staff only)."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from deployments.fleet import join_token_create, join_token_revoke, node_credential_revoke
from deployments.forms import JoinTokenCreateForm
from deployments.models import JoinToken, WorkerNode
from deployments.selectors import fleet_snapshot


def staff_required(view):
    """Anonymous visitors go to the login page; signed-in users who are not staff get a 403."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("The fleet is for operators (staff users) only.")
        return view(request, *args, **kwargs)

    return wrapper


def fleet_totals(snapshot: dict) -> dict:
    """The figures above the tables; static/js/fleet.js computes the same from each live snapshot."""
    serving = [n for n in snapshot["nodes"] if n["status"] in (WorkerNode.Status.ONLINE, WorkerNode.Status.DRAINING)]
    return {
        "online": sum(n["status"] == WorkerNode.Status.ONLINE for n in snapshot["nodes"]),
        "nodes": len(snapshot["nodes"]),
        "in_flight": sum(n["in_flight"] for n in serving),
        "slots": sum(n["slots"] for n in serving),
        "waiting": sum(q["waiting"] for q in snapshot["queues"]),
    }


def _server_url(request) -> str:
    """This server's base URL as the browser reached it: what a GPU machine passes as --server."""
    return request.build_absolute_uri("/").rstrip("/")


@staff_required
def fleet_overview(request):
    # The same snapshot the WebSocket pushes, so the first paint and the live updates agree.
    snapshot = fleet_snapshot()
    return render(request, "deployments/fleet.html", {"snapshot": snapshot, "totals": fleet_totals(snapshot)})


@staff_required
@require_http_methods(["GET", "POST"])
def node_revoke(request, node_id: int):
    node = get_object_or_404(WorkerNode.objects.select_related("join_token"), pk=node_id)
    if request.method == "POST":
        node_credential_revoke(node=node)
        messages.success(
            request, f"Revoked the credential of “{node.name}”. The node is refused at its next heartbeat and stops."
        )
        return redirect("fleet:fleet")
    return render(request, "deployments/node_revoke.html", {"node": node})


@staff_required
@require_http_methods(["GET", "POST"])
def tokens_list(request):
    new_token = None
    form = JoinTokenCreateForm()
    if request.method == "POST":
        form = JoinTokenCreateForm(request.POST)
        if form.is_valid():
            _, new_token = join_token_create(name=form.cleaned_data["name"], created_by=request.user)
            form = JoinTokenCreateForm()
    # GROUP BY queries ignore Meta.ordering: order explicitly.
    tokens = JoinToken.objects.select_related("created_by").annotate(node_count=Count("nodes")).order_by("-created_at")
    # The new token is rendered in this response only: it is never stored, so it cannot be shown again.
    response = render(
        request,
        "deployments/tokens.html",
        {"form": form, "tokens": tokens, "new_token": new_token, "server_url": _server_url(request)},
        status=400 if request.method == "POST" and new_token is None else 200,
    )
    if new_token:
        add_never_cache_headers(response)  # keep the secret out of browser and proxy caches
    return response


@staff_required
@require_http_methods(["GET", "POST"])
def token_revoke(request, token_id: int):
    token = get_object_or_404(JoinToken.objects.annotate(node_count=Count("nodes")), pk=token_id)
    if request.method == "POST":
        join_token_revoke(token=token)
        messages.success(request, f"Revoked “{token.name}”. Machines can no longer join with it.")
        return redirect("fleet:tokens")
    return render(request, "deployments/token_revoke.html", {"token": token})

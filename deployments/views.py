"""The operators' dashboard: the live fleet, join tokens, node credentials, deployments and the
model catalog (staff only)."""

from decimal import Decimal
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Prefetch, ProtectedError
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from deployments import placement, services
from deployments.fleet import join_token_create, join_token_revoke, node_credential_revoke
from deployments.forms import (
    CatalogModelForm,
    DeploymentCreateForm,
    DeploymentScaleForm,
    DeploymentSettingsForm,
    JoinTokenCreateForm,
    add_service_errors,
)
from deployments.models import CatalogModel, Deployment, Engine, JoinToken, Replica, WorkerNode
from deployments.placement import replica_memory_gb
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


# --- Deployments ----------------------------------------------------------------------------------


def _deployments():
    replicas = Replica.objects.select_related("node").order_by("id")
    return Deployment.objects.select_related("model").prefetch_related(Prefetch("replica_set", queryset=replicas))


def _get_deployment(name: str) -> Deployment:
    return get_object_or_404(_deployments(), name=name)


def _deployment_rows(bound_scale_form: tuple[Deployment, DeploymentScaleForm] | None = None) -> list[Deployment]:
    """Deployments with what their table row shows: replicas running, memory need, a scale form."""
    rows = list(_deployments())
    for deployment in rows:
        replicas = deployment.replica_set.all()
        deployment.replicas_running = sum(r.state == Replica.State.RUNNING for r in replicas)
        deployment.unplaced = max(deployment.replicas - len(replicas), 0)
        deployment.memory_need_gb = replica_memory_gb(deployment)
        deployment.memory_estimated = deployment.engine != Engine.OPENAI and deployment.memory_gb is None
        deployment.scale_form = DeploymentScaleForm(initial={"replicas": deployment.replicas}, prefix=deployment.name)
        if bound_scale_form and bound_scale_form[0].pk == deployment.pk:
            deployment.scale_form = bound_scale_form[1]
    return rows


def _deployments_page(request, *, form=None, bound_scale_form=None, status=200):
    rows = _deployment_rows(bound_scale_form)
    totals = {
        "running": sum(d.status == Deployment.Status.RUNNING for d in rows),
        "deployments": len(rows),
        "replicas_running": sum(d.replicas_running for d in rows),
        "replicas": sum(d.replicas for d in rows if d.status != Deployment.Status.STOPPED),
        "scheduling": sum(d.status == Deployment.Status.SCHEDULING for d in rows),
        "failed": sum(d.status == Deployment.Status.FAILED for d in rows),
    }
    context = {
        "deployments": rows,
        "totals": totals,
        "form": form or DeploymentCreateForm(),
        "has_models": CatalogModel.objects.exists(),
        "scale_failed": bound_scale_form is not None,
    }
    return render(request, "deployments/deployments.html", context, status=status)


def _placement_message(request, deployment: Deployment, done: str) -> None:
    """Say what was done and where placement left the deployment: a warning when it waits for GPUs."""
    if deployment.status == Deployment.Status.SCHEDULING:
        messages.warning(request, f"{done} It is waiting for GPUs: {deployment.status_reason}")
    elif deployment.status == Deployment.Status.FAILED:
        messages.error(request, f"{done} It has failed: {deployment.status_reason}")
    else:
        nodes = sorted({r.node.name for r in deployment.replica_set.select_related("node")})
        where = f" on {', '.join(nodes)}" if nodes else ""
        placed = deployment.replica_set.count()
        messages.success(request, f"{done} {placed} replica{pluralize(placed)} placed{where}.")


@staff_required
@require_http_methods(["GET", "POST"])
def deployments_list(request):
    if request.method == "GET":
        return _deployments_page(request)
    form = DeploymentCreateForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            deployment = services.deployment_create(
                name=data["name"],
                model=data["model"],
                replicas=data["replicas"],
                engine=data["engine"] or None,
                engine_config=data["engine_config"],
                precision=data["precision"],
                gpu_profile=data["gpu_profile"],
                placement_strategy=data["placement"],
                min_replicas=data["min_replicas"],
                max_replicas=data["max_replicas"],
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            _placement_message(request, deployment, f"Created “{deployment.name}”.")
            return redirect("fleet:deployments")
    return _deployments_page(request, form=form, status=400)


@staff_required
@require_POST
def deployment_scale(request, name: str):
    deployment = _get_deployment(name)
    form = DeploymentScaleForm(request.POST, prefix=deployment.name)
    if form.is_valid():
        try:
            deployment = services.deployment_update(deployment=deployment, replicas=form.cleaned_data["replicas"])
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            count = deployment.replicas
            _placement_message(request, deployment, f"Scaled “{deployment.name}” to {count} replica{pluralize(count)}.")
            return redirect("fleet:deployments")
    return _deployments_page(request, bound_scale_form=(deployment, form), status=400)


@staff_required
@require_http_methods(["GET", "POST"])
def deployment_edit(request, name: str):
    deployment = _get_deployment(name)
    initial = {field: getattr(deployment, field) for field in DeploymentSettingsForm.base_fields}
    form = DeploymentSettingsForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            deployment = services.deployment_update(deployment=deployment, **form.cleaned_data)
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            _placement_message(request, deployment, f"Saved “{deployment.name}”.")
            return redirect("fleet:deployments")
    return render(
        request,
        "deployments/deployment_edit.html",
        {"deployment": deployment, "form": form},
        status=400 if request.method == "POST" else 200,
    )


@staff_required
@require_POST
def deployment_stop(request, name: str):
    deployment = _get_deployment(name)
    if deployment.status == Deployment.Status.STOPPED:
        messages.info(request, f"“{deployment.name}” is already stopped.")
    else:
        services.deployment_stop(deployment=deployment)
        messages.success(
            request, f"Stopped “{deployment.name}”: its replicas were removed and their GPU memory is free."
        )
    return redirect("fleet:deployments")


@staff_required
@require_POST
def deployment_start(request, name: str):
    deployment = _get_deployment(name)
    if deployment.status != Deployment.Status.STOPPED:
        messages.info(request, f"“{deployment.name}” is not stopped: nothing to start.")
    else:
        deployment = services.deployment_start(deployment=deployment)
        _placement_message(request, deployment, f"Started “{deployment.name}”.")
    return redirect("fleet:deployments")


@staff_required
@require_http_methods(["GET", "POST"])
def deployment_delete(request, name: str):
    deployment = _get_deployment(name)
    if request.method == "POST":
        services.deployment_delete(deployment=deployment)
        messages.success(request, f"Deleted “{deployment.name}”. Its nodes stop serving it at their next heartbeat.")
        return redirect("fleet:deployments")
    return render(request, "deployments/deployment_delete.html", {"deployment": deployment})


# --- The catalog ----------------------------------------------------------------------------------


def _catalog_models():
    return CatalogModel.objects.prefetch_related("aliases").annotate(deployment_count=Count("deployments"))


def _usd(amount: Decimal) -> str:
    """A price with cents, and more decimals only where it has them: 0.10, 0.0150."""
    amount = amount.normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return f"{amount:f}"


def _catalog_rows() -> list[CatalogModel]:
    # GROUP BY queries ignore Meta.ordering: order explicitly.
    rows = list(_catalog_models().order_by("model_id"))
    for model in rows:
        model.parameters = f"{model.parameters_billion.normalize():f}"
        model.price_input = _usd(model.price_input_per_million)
        model.price_output = _usd(model.price_output_per_million)
    return rows


@staff_required
@require_http_methods(["GET", "POST"])
def models_list(request):
    form = CatalogModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        model = form.save()
        messages.success(request, f"Added “{model.model_id}” to the catalog. Deploy it on the Deployments page.")
        return redirect("fleet:models")
    return render(
        request,
        "deployments/models.html",
        {"models": _catalog_rows(), "form": form},
        status=400 if request.method == "POST" else 200,
    )


@staff_required
@require_http_methods(["GET", "POST"])
def model_edit(request, model_id: int):
    model = get_object_or_404(CatalogModel, pk=model_id)
    form = CatalogModelForm(request.POST or None, instance=model)
    if request.method == "POST" and form.is_valid():
        model = form.save()
        # A smaller memory need may let a deployment that waits for GPUs fit now.
        placement.reconcile()
        messages.success(request, f"Saved “{model.model_id}”.")
        return redirect("fleet:models")
    return render(
        request,
        "deployments/model_edit.html",
        {"model": model, "form": form},
        status=400 if request.method == "POST" else 200,
    )


@staff_required
@require_http_methods(["GET", "POST"])
def model_delete(request, model_id: int):
    model = get_object_or_404(_catalog_models(), pk=model_id)
    if request.method == "POST":
        if model.deployment_count:
            count = model.deployment_count
            messages.error(
                request,
                f"“{model.model_id}” was not deleted: {count} deployment{pluralize(count)} use"
                f"{pluralize(count, 's,')} it. Delete {pluralize(count, 'it,them')} on the Deployments page first.",
            )
            return redirect("fleet:models")
        try:
            model.delete()
        except ProtectedError:  # a deployment of it was created meanwhile
            messages.error(request, f"“{model.model_id}” was not deleted: a deployment uses it.")
        else:
            messages.success(request, f"Deleted “{model.model_id}” and its aliases from the catalog.")
        return redirect("fleet:models")
    return render(request, "deployments/model_delete.html", {"model": model})

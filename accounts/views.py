"""The dashboard: API keys and usage (server-rendered, session login)."""

import functools
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import get_usage

from accounts.forms import ApiKeyCreateForm, UsageFilterForm
from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from billing.selectors import keys_with_budget_spend
from gpucloud.csv_export import csv_response
from inference.selectors import (
    USAGE_CSV_COLUMNS,
    usage_csv_rows,
    usage_for_user,
    usage_models_for_user,
    usage_overview,
    usage_series,
    usage_series_resolution,
)

# --- Login, throttled ----------------------------------------------------------------------------

LOGIN_FAILURES_PER_MINUTE = 10


def _login_username(group: str, request) -> str:
    return request.POST.get("username", "").strip().lower()[:150]


def _login_failures(request, *, increment: bool) -> int | None:
    """Seconds until the caller may try again when the IP or the username has failed too often
    this minute (counting this failure if ``increment``), else None. django-ratelimit counts."""
    rate = f"{LOGIN_FAILURES_PER_MINUTE}/m"
    keys = ["ip"] + (["accounts.views._login_username"] if _login_username("", request) else [])
    wait = None
    for key in keys:
        usage = get_usage(request, group=f"login-failures-{key}", key=key, rate=rate, increment=increment)
        if usage is not None and usage["count"] >= usage["limit"]:
            wait = max(wait or 0, usage["time_left"], 1)
    return wait


def throttle_login_failures(view):
    """Wrap a login view: after 10 failed logins a minute from an IP or for a username, answer 429
    (even to the right password) until the minute is over."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method == "POST":
            wait = _login_failures(request, increment=False)
            if wait is not None:
                response = render(
                    request,
                    "registration/login_throttled.html",
                    {"retry_after": wait, "retry_at": timezone.now() + timedelta(seconds=wait)},
                    status=429,
                )
                response["Retry-After"] = str(wait)
                return response
        response = view(request, *args, **kwargs)
        # A failed login shows the form again (200); a successful one redirects.
        if request.method == "POST" and response.status_code == 200 and not request.user.is_authenticated:
            _login_failures(request, increment=True)
        return response

    return wrapper


class ThrottledLoginView(auth_views.LoginView):
    """Django's login view, with failed attempts throttled per IP and per username."""

    @classmethod
    def as_view(cls, **initkwargs):
        return throttle_login_failures(super().as_view(**initkwargs))

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "signup_enabled": settings.SIGNUP_ENABLED}


# --- API keys ------------------------------------------------------------------------------------


def _get_key_for_user(request, key_id: int) -> ApiKey:
    """The user's own key, or 404: tenant isolation lives here."""
    return get_object_or_404(ApiKey, pk=key_id, user=request.user)


@login_required
def home(request):
    return redirect("dashboard:keys")


@login_required
@require_http_methods(["GET", "POST"])
def keys_list(request):
    new_key = None
    form = ApiKeyCreateForm()
    if request.method == "POST":
        form = ApiKeyCreateForm(request.POST)
        if form.is_valid():
            try:
                _, new_key = api_key_create(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    rpm=form.cleaned_data["rpm"],
                    expires_at=form.cleaned_data["expires_at"],
                    allowed_models=form.cleaned_data["allowed_models"],
                    max_budget=form.cleaned_data["max_budget"],
                    budget_period=form.cleaned_data["budget_period"],
                    tpm=form.cleaned_data["tpm"],
                    max_parallel=form.cleaned_data["max_parallel"],
                    trusted_only=form.cleaned_data["trusted_only"],
                )
            except ValidationError as error:
                form.add_error(None, error)
            else:
                form = ApiKeyCreateForm()
    keys = keys_with_budget_spend(request.user.api_keys.all())
    # The new key is rendered in this response only: it is never stored, so it cannot be shown again.
    response = render(
        request,
        "accounts/keys.html",
        {"form": form, "keys": keys, "new_key": new_key, "base_url": request.build_absolute_uri("/v1")},
        status=400 if request.method == "POST" and new_key is None else 200,
    )
    if new_key:
        response["Cache-Control"] = "no-store"  # the key must not linger in a cache
    return response


@login_required
@require_http_methods(["GET", "POST"])
def key_revoke(request, key_id: int):
    api_key = _get_key_for_user(request, key_id)
    if request.method == "POST":
        api_key_revoke(api_key=api_key)
        messages.success(request, f"Revoked “{api_key.name}”. Requests with it are refused from now on.")
        return redirect("dashboard:keys")
    return render(request, "accounts/key_revoke.html", {"key": api_key})


USAGE_PAGE_SIZE = 100


def _usage_filtered(request, *, now=None) -> tuple[UsageFilterForm, dict]:
    """The Usage page's filters from the query string (the last 7 days by default; invalid
    choices, such as another user's key, fall back to the default) and the records they select,
    with the period they cover."""
    now = now or timezone.now()
    form = UsageFilterForm(
        request.GET or {"days": "7"}, keys=request.user.api_keys.all(), models=usage_models_for_user(request.user)
    )
    filters = form.cleaned_data if form.is_valid() else {"days": "7"}
    start = now - timedelta(days=int(filters["days"])) if filters.get("days") else None
    records = usage_for_user(
        request.user, key_prefix=filters.get("key"), model=filters.get("model"), start=start, end=None
    )
    if start is None:  # all time: from the first request
        first = records.order_by("created_at").values_list("created_at", flat=True).first()
        start = first or now
    return form, {"records": records, "start": start, "end": now, "per": filters.get("per") or None}


@login_required
def usage(request):
    form, selection = _usage_filtered(request)
    records, start, end = selection["records"], selection["start"], selection["end"]
    per = usage_series_resolution(start, end, selection["per"])
    overview = usage_overview(records)
    series = usage_series(records, start=start, end=end, per=per)
    page = Paginator(records, USAGE_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "accounts/usage.html",
        {
            "form": form,
            "totals": overview["totals"],
            "by_model": overview["by_model"],
            "series_rows": series["rows"],
            # For static/js/usage-charts.js, through json_script: the same figures without the table rows.
            "chart": {name: value for name, value in series.items() if name != "rows"},
            "per": per,
            "page": page,
            "records": page.object_list,
            "query": query.urlencode(),
            "api_url": reverse("api-usage"),
        },
    )


@login_required
def usage_csv(request):
    """The requests the Usage page's filters select, every one (not only a page), as CSV, streamed."""
    _, selection = _usage_filtered(request)
    return csv_response("usage.csv", USAGE_CSV_COLUMNS, usage_csv_rows(selection["records"]))

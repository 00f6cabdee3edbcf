"""The Billing page (balance, spend, ledger, CSV export, staff credit grants) and the Models &
pricing page every signed-in user sees."""

from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing import selectors, services
from billing.forms import CreditGrantForm
from billing.money import plain, usd
from gpucloud.csv_export import csv_response

LEDGER_PAGE_SIZE = 50
CHART_DAYS = 30


def _spend_chart(days: list[tuple[str, Decimal]]) -> dict:
    """Spend per day for the page's table and, through ``json_script``, for static/js/billing.js.

    Amounts are exact decimal strings (JSON numbers would be floats); the script turns them into
    numbers only to draw them.
    """
    return {
        "rows": [{"day": day, "usd": plain(amount)} for day, amount in days],
        "top": plain(max((amount for _, amount in days), default=Decimal(0))),
        "total": plain(sum((amount for _, amount in days), Decimal(0))),
    }


def _billing_page(request, *, grant_form: CreditGrantForm | None = None, status: int = 200):
    balance = selectors.balance_of(request.user)
    page = Paginator(selectors.ledger_for_user(request.user), LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "balance": plain(balance),
        "low_balance": balance < Decimal(settings.BILLING_LOW_BALANCE_USD),
        "spend_this_month": plain(selectors.spend_this_month(request.user)),
        "chart": _spend_chart(selectors.spend_by_day(request.user, days=CHART_DAYS)),
        "key_budgets": selectors.key_budgets(request.user),
        "page": page,
        "api_url": reverse("api-balance"),
        "ledger_api_url": reverse("api-ledger"),
    }
    if request.user.is_staff:
        context["grant_form"] = grant_form or CreditGrantForm()
    return render(request, "billing/billing.html", context, status=status)


@login_required
def billing(request):
    return _billing_page(request)


@login_required
def ledger_csv(request):
    """The user's whole ledger as CSV, streamed."""
    header = ["created_at", "kind", "amount_usd", "balance_after_usd", "reference", "key", "note"]
    rows = (
        [
            entry.created_at.isoformat(),
            entry.kind,
            f"{entry.amount:f}",
            f"{entry.balance_after:f}",
            entry.reference,
            entry.api_key.display_prefix if entry.api_key else "",
            entry.note,
        ]
        for entry in selectors.ledger_for_user(request.user).iterator(chunk_size=1000)
    )
    return csv_response("ledger.csv", header, rows)


@login_required
def usage_csv(request):
    """The user's usage records (every request, with its cost) as CSV, streamed."""
    from inference.selectors import USAGE_CSV_COLUMNS, usage_csv_rows, usage_for_user

    return csv_response("usage.csv", USAGE_CSV_COLUMNS, usage_csv_rows(usage_for_user(request.user)))


@login_required
@require_POST
def credit_grant(request):
    if not request.user.is_staff:
        raise PermissionDenied("Only operators (staff users) grant credits.")
    form = CreditGrantForm(request.POST)
    if form.is_valid():
        user, amount = form.cleaned_data["username"], form.cleaned_data["amount"]
        try:
            services.staff_credit(
                user=user,
                amount=amount,
                created_by=request.user,
                note=form.cleaned_data["note"],
                idempotency_key=f"dashboard:{form.cleaned_data['token']}",
            )
        except ValidationError as error:
            form.add_error("amount", error)
        else:
            messages.success(
                request, f"Posted {usd(amount)} to {user}: the balance is now {usd(selectors.balance_of(user))}."
            )
            return redirect("billing:billing")
    return _billing_page(request, grant_form=form, status=400)


@login_required
def pricing(request):
    from marketplace.views import pricing_context  # GPU host marketplace: capacity, trusted-only choice

    return render(
        request, "billing/pricing.html", {"models": selectors.models_with_prices(), **pricing_context(request)}
    )

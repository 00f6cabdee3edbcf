"""Staff: the Users pages (list and search, edit, disable and enable, grant credits), without
Django admin. The rules (who may change whom) are in accounts.users."""

import functools

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import selectors, users
from accounts.account_forms import StaffCreditForm, StaffUserForm, UserSearchForm
from billing.money import usd
from billing.selectors import balance_of

USERS_PER_PAGE = 50


def staff_required(view):
    """Log in first; then staff only (403 for everyone else)."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("Only operators (staff users) manage users.")
        return view(request, *args, **kwargs)

    return wrapper


def _get_user(user_id: int):
    try:
        return selectors.user_for_staff(user_id)
    except get_user_model().DoesNotExist:
        raise Http404("No such user.") from None


@staff_required
def users_list(request):
    form = UserSearchForm(request.GET or None)
    search = form.cleaned_data["q"] if form.is_valid() else ""
    page = Paginator(selectors.users_for_staff(search), USERS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "accounts/staff/users.html", {"form": form, "search": search, "page": page})


def _edit_page(request, user, *, form=None, credit_form=None, status=200):
    return render(
        request,
        "accounts/staff/user_edit.html",
        {
            "subject": user,
            "form": form
            or StaffUserForm(
                initial={
                    "first_name": user.first_name,
                    "last_name": user.last_name,
                    "email": user.email,
                    "is_staff": user.is_staff,
                }
            ),
            "credit_form": credit_form or StaffCreditForm(),
            "balance": balance_of(user),
            "may_manage": not user.is_superuser or request.user.is_superuser,
        },
        status=status,
    )


@staff_required
@require_http_methods(["GET", "POST"])
def user_edit(request, user_id: int):
    user = _get_user(user_id)
    if request.method == "GET":
        return _edit_page(request, user)
    form = StaffUserForm(request.POST)
    if form.is_valid():
        try:
            users.user_update(actor=request.user, user=user, **form.cleaned_data)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Saved {user.get_username()}.")
            return redirect("users:edit", user.pk)
    return _edit_page(request, user, form=form, status=400)


@staff_required
@require_POST
def user_set_active(request, user_id: int):
    user = _get_user(user_id)
    active = request.POST.get("active") == "1"
    try:
        users.user_set_active(actor=request.user, user=user, active=active)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        if active:
            messages.success(request, f"Enabled {user.get_username()}: they can log in and use their keys again.")
        else:
            messages.success(
                request, f"Disabled {user.get_username()}: their sessions and API keys stop working at once."
            )
    next_url = request.POST.get("next")
    if next_url == "list":
        return redirect("users:list")
    return redirect("users:edit", user.pk)


@staff_required
@require_POST
def user_credit(request, user_id: int):
    user = _get_user(user_id)
    form = StaffCreditForm(request.POST)
    if form.is_valid():
        amount = form.cleaned_data["amount"]
        try:
            users.user_credit_grant(
                actor=request.user,
                user=user,
                amount=amount,
                note=form.cleaned_data["note"],
                idempotency_key=f"users-page:{form.cleaned_data['token']}",
            )
        except ValidationError as error:
            form.add_error("amount", error)
        else:
            messages.success(
                request, f"Posted {usd(amount)} to {user.get_username()}: the balance is now {usd(balance_of(user))}."
            )
            return redirect("users:edit", user.pk)
    return _edit_page(request, user, credit_form=form, status=400)

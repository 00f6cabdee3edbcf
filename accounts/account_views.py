"""Self-service accounts: sign-up, email verification, password reset and change.

Password reset and change are Django's own views with the dashboard's templates. Every page that
sends an email (sign-up, resending the verification link, password reset) is throttled per IP and
per address, and answers the same whether or not the address has an account.
"""

import functools
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import get_usage

from accounts import users
from accounts.account_forms import EmailForm, SignupForm
from billing.money import usd

# --- Throttling the pages that send email ----------------------------------------------------


def _posted_email(group: str, request) -> str:
    return users.normalize_email(request.POST.get("email", ""))[:254]


def _email_requests_wait(request) -> int | None:
    """Count this request against the IP's and the address's hourly allowance; seconds to wait
    if either is spent, else None."""
    rate = f"{settings.ACCOUNT_EMAILS_PER_HOUR}/h"
    keys = ["ip"] + (["accounts.account_views._posted_email"] if _posted_email("", request) else [])
    wait = None
    for key in keys:
        usage = get_usage(request, group=f"account-emails-{key}", key=key, rate=rate, increment=True)
        if usage is not None and usage["should_limit"]:
            wait = max(wait or 0, usage["time_left"], 1)
    return wait


def throttle_account_emails(view):
    """Answer 429 to a POST once the IP or the address has asked for ACCOUNT_EMAILS_PER_HOUR emails
    (sign-ups, verification links, password resets) this hour."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method == "POST":
            wait = _email_requests_wait(request)
            if wait is not None:
                response = render(
                    request,
                    "registration/account_throttled.html",
                    {"retry_after": wait, "retry_at": timezone.now() + timedelta(seconds=wait)},
                    status=429,
                )
                response["Retry-After"] = str(wait)
                return response
        return view(request, *args, **kwargs)

    return wrapper


def _verification_link(request):
    return lambda uid, token: request.build_absolute_uri(reverse("verify-email", args=[uid, token]))


# --- Sign-up and email verification ----------------------------------------------------------


@throttle_account_emails
@require_http_methods(["GET", "POST"])
def signup(request):
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is closed: ask an operator for an account.")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            users.signup(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
                link=_verification_link(request),
                login_url=request.build_absolute_uri(reverse("login")),
                reset_url=request.build_absolute_uri(reverse("password_reset")),
            )
        except ValidationError as error:
            form.add_error("email", error)
        else:
            # The same answer whether the address was new or already had an account.
            return redirect("signup-done")
    return render(
        request,
        "registration/signup.html",
        {"form": form, "credit": usd(users.signup_credit())},
        status=400 if form.is_bound else 200,
    )


def signup_done(request):
    return render(request, "registration/signup_done.html")


@require_http_methods(["GET", "POST"])
def verify_email(request, uidb64: str, token: str):
    """The link in the verification email opens a page with a button: a GET changes nothing, so
    a mail scanner that fetches links does not verify on the owner's behalf."""
    user = users.verification_user(uidb64, token)
    if user is None:
        return render(request, "registration/verify_email.html", {"valid": False}, status=400)
    if request.method == "POST":
        users.email_verify(user=user)
        messages.success(
            request,
            f"Your email address is verified and your account is ready, with {usd(users.signup_credit())} of credits "
            "to start. Log in.",
        )
        return redirect("login")
    return render(request, "registration/verify_email.html", {"valid": True, "email": user.email})


@throttle_account_emails
@require_http_methods(["GET", "POST"])
def verification_resend(request):
    form = EmailForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        users.verification_resend(email=form.cleaned_data["email"], link=_verification_link(request))
        messages.info(
            request,
            "If an account with that address is waiting for verification, a new link is on its way.",
        )
        return redirect("signup-done")
    return render(
        request, "registration/verification_resend.html", {"form": form}, status=400 if form.is_bound else 200
    )


# --- Password reset and change: Django's views, the dashboard's templates ---------------------

password_reset = throttle_account_emails(
    auth_views.PasswordResetView.as_view(
        email_template_name="registration/password_reset_email.txt",
        subject_template_name="registration/password_reset_subject.txt",
        extra_email_context={"days": users.link_days()},
    )
)
password_reset_done = auth_views.PasswordResetDoneView.as_view()
password_reset_confirm = auth_views.PasswordResetConfirmView.as_view()
password_reset_complete = auth_views.PasswordResetCompleteView.as_view()
password_change = auth_views.PasswordChangeView.as_view(success_url=reverse_lazy("password_change_done"))
password_change_done = auth_views.PasswordChangeDoneView.as_view()

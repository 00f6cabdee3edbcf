"""People's accounts: sign-up with email verification, and what staff change about a user.

Sign-up makes an inactive user whose username is their email address, with an
:class:`~accounts.models.EmailVerification` row, and emails a link; following it (and pressing the
button on the page it opens) activates the account, and only then can its owner log in. The new
user gets the starting credit the billing app gives every new user (``billing.signals``), usable
once verified. Signing up with an address that already has an account sends that address a notice
instead, and the page the visitor sees is the same either way: nobody learns from sign-up which
addresses are registered.

Staff list, edit, disable and enable users and grant credits (through ``billing.services``). A
disabled user cannot log in, their sessions end and their API keys are refused; nothing they own
is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import EmailVerification
from billing import services as billing_services

logger = logging.getLogger(__name__)

#: Builds the absolute URL of the verification page from (uidb64, token).
LinkBuilder = Callable[[str, str], str]


class EmailVerificationTokenGenerator(PasswordResetTokenGenerator):
    """Like Django's password-reset tokens (HMAC of the user's state and a timestamp, valid for
    ``PASSWORD_RESET_TIMEOUT``), salted apart so that one kind is never the other, and void once the
    account is active."""

    key_salt = "accounts.users.EmailVerificationTokenGenerator"

    def _make_hash_value(self, user, timestamp):
        return f"{super()._make_hash_value(user, timestamp)}{user.is_active}"


email_verification_token = EmailVerificationTokenGenerator()


def normalize_email(email: str) -> str:
    """The whole address in lower case: it is the username, and people type it as they like."""
    return email.strip().lower()


def email_taken(email: str) -> bool:
    User = get_user_model()
    return User.objects.filter(email__iexact=email).exists() or User.objects.filter(username__iexact=email).exists()


def _send(template: str, *, to: str, context: dict) -> None:
    subject = render_to_string(f"registration/{template}_subject.txt", context).strip()
    body = render_to_string(f"registration/{template}_email.txt", context)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])


def verification_send(user, *, link: LinkBuilder) -> None:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    _send(
        "verification",
        to=user.email,
        context={
            "user": user,
            "link": link(uid, email_verification_token.make_token(user)),
            "credit": signup_credit(),
            "days": link_days(),
        },
    )
    EmailVerification.objects.filter(user=user).update(sent_at=timezone.now())


def link_days() -> int:
    """How many days an emailed link works (PASSWORD_RESET_TIMEOUT, for both kinds of link)."""
    return max(settings.PASSWORD_RESET_TIMEOUT // 86400, 1)


def signup_credit() -> Decimal:
    return Decimal(settings.SIGNUP_CREDIT_USD)


def signup(*, email: str, password: str, link: LinkBuilder, login_url: str, reset_url: str):
    """Create an inactive account for ``email`` and send it a verification link; returns the user.
    If the address already has an account, email it a notice and return None. The caller must
    answer the same in both cases. ``password`` must have passed the password validators."""
    email = normalize_email(email)
    validate_email(email)
    User = get_user_model()
    if len(email) > User._meta.get_field("username").max_length:
        raise ValidationError("Use an email address of at most 150 characters.")
    user = None
    if not email_taken(email):
        try:
            with transaction.atomic():
                user = User.objects.create_user(username=email, email=email, password=password, is_active=False)
                EmailVerification.objects.create(user=user)
        except IntegrityError:
            user = None  # the same address signed up at the same moment
    if user is None:
        _send("signup_exists", to=email, context={"email": email, "login_url": login_url, "reset_url": reset_url})
        return None
    verification_send(user, link=link)
    logger.info("New account %s, waiting for email verification", user.pk)
    return user


def signup_password_check(*, email: str, password: str) -> None:
    """Run the password validators as for a user with this address (raises ValidationError)."""
    email = normalize_email(email)
    User = get_user_model()
    password_validation.validate_password(password, User(username=email, email=email))


def verification_user(uidb64: str, token: str):
    """The user waiting for verification that this link is for, or None if it is not (any more) valid."""
    from django.utils.http import urlsafe_base64_decode

    User = get_user_model()
    try:
        pk = urlsafe_base64_decode(uidb64).decode()
        user = User.objects.get(pk=pk)
    except (TypeError, ValueError, OverflowError, User.DoesNotExist, ValidationError):
        return None
    if user.is_active or not EmailVerification.objects.filter(user=user).exists():
        return None
    if not email_verification_token.check_token(user, token):
        return None
    return user


def email_verify(*, user) -> None:
    """Activate an account whose owner followed the verification link (see :func:`verification_user`)."""
    with transaction.atomic():
        deleted, _ = EmailVerification.objects.filter(user=user).delete()
        if not deleted:
            raise ValidationError("This account is not waiting for verification.")
        user.is_active = True
        user.save(update_fields=["is_active"])
    logger.info("Account %s verified its email", user.pk)


def verification_resend(*, email: str, link: LinkBuilder) -> None:
    """Send the verification link again if ``email`` belongs to an account waiting for it; do
    nothing otherwise (the caller says the same either way)."""
    email = normalize_email(email)
    waiting = EmailVerification.objects.filter(user__email__iexact=email, user__is_active=False).select_related("user")
    for verification in waiting:
        verification_send(verification.user, link=link)


# --- Staff -----------------------------------------------------------------------------------


def _check_may_manage(actor, user) -> None:
    if not (actor and actor.is_active and actor.is_staff):
        raise PermissionDenied("Only operators (staff users) manage users.")
    if user.is_superuser and not actor.is_superuser:
        raise PermissionDenied("Only a superuser may change a superuser.")


def user_update(*, actor, user, first_name: str, last_name: str, email: str, is_staff: bool):
    """Change a user's name, email address and staff flag."""
    _check_may_manage(actor, user)
    email = normalize_email(email)
    validate_email(email)
    User = get_user_model()
    if User.objects.filter(email__iexact=email).exclude(pk=user.pk).exists():
        raise ValidationError({"email": "Another account has this email address."})
    if user.pk == actor.pk and not is_staff:
        raise ValidationError({"is_staff": "You cannot take away your own staff access."})
    fields = ["first_name", "last_name", "email", "is_staff"]
    # A signed-up account logs in with its address: its username follows a new one.
    if user.username.lower() == user.email.lower() and email != user.email:
        if User.objects.filter(username__iexact=email).exclude(pk=user.pk).exists():
            raise ValidationError({"email": "Another account has this email address as its username."})
        user.username = email
        fields.append("username")
    user.first_name, user.last_name, user.email, user.is_staff = first_name.strip(), last_name.strip(), email, is_staff
    user.save(update_fields=fields)
    logger.info("Staff %s updated user %s", actor.pk, user.pk)
    return user


def user_set_active(*, actor, user, active: bool):
    """Disable a user (no login, no sessions, no API keys; nothing deleted) or enable them again.
    Enabling an account still waiting for email verification verifies it: staff vouch for it."""
    _check_may_manage(actor, user)
    if user.pk == actor.pk and not active:
        raise ValidationError("You cannot disable your own account.")
    with transaction.atomic():
        if active:
            EmailVerification.objects.filter(user=user).delete()
        user.is_active = active
        user.save(update_fields=["is_active"])
    logger.info("Staff %s %s user %s", actor.pk, "enabled" if active else "disabled", user.pk)
    return user


def user_credit_grant(*, actor, user, amount: Decimal, note: str = "", idempotency_key: str | None = None):
    """Give a user credits (negative: take some back) through the billing ledger."""
    _check_may_manage(actor, user)
    return billing_services.staff_credit(
        user=user, amount=amount, created_by=actor, note=note, idempotency_key=idempotency_key
    )

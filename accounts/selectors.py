"""Reads about people's accounts, for the staff Users pages."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts.models import EmailVerification


def users_for_staff(search: str = "") -> QuerySet:
    """Every user, newest first, with ``awaiting_verification`` and their billing account (balance)
    at hand; ``search`` matches username, email or name (any part, any case)."""
    User = get_user_model()
    users = (
        User.objects.select_related("billing_account")
        .annotate(awaiting_verification=Exists(EmailVerification.objects.filter(user=OuterRef("pk"))))
        .order_by("-date_joined", "-pk")
    )
    for word in search.split():
        users = users.filter(
            Q(username__icontains=word)
            | Q(email__icontains=word)
            | Q(first_name__icontains=word)
            | Q(last_name__icontains=word)
        )
    return users


def user_for_staff(user_id: int):
    """One user as :func:`users_for_staff` has them, or DoesNotExist."""
    return users_for_staff().get(pk=user_id)

"""accounts.users: sign-up and what staff may change about whom."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError

from accounts import users
from accounts.models import EmailVerification
from billing.models import LedgerEntry
from billing.selectors import balance_of

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def link(uid, token):
    return f"http://testserver/verify/{uid}/{token}/"


def _signup(email="new@example.com"):
    return users.signup(email=email, password="a fine passphrase", link=link, login_url="L", reset_url="R")


def test_signup_makes_an_inactive_account_waiting_for_verification(mailoutbox):
    user = _signup()
    assert user.username == user.email == "new@example.com"
    assert not user.is_active
    assert EmailVerification.objects.filter(user=user).exists()
    assert len(mailoutbox) == 1


def test_signup_refuses_an_address_too_long_for_a_username(mailoutbox):
    with pytest.raises(ValidationError):
        _signup(email="a" * 140 + "@example.com")
    assert mailoutbox == []


def test_signup_of_a_taken_address_returns_none(mailoutbox, user):
    assert _signup(email="alice@EXAMPLE.com") is None
    assert get_user_model().objects.count() == 1


def test_verification_activates_once(mailoutbox):
    user = _signup()
    users.email_verify(user=user)
    user.refresh_from_db()
    assert user.is_active
    with pytest.raises(ValidationError):
        users.email_verify(user=user)


def test_staff_update_a_user(staff, user):
    users.user_update(
        actor=staff, user=user, first_name=" Alice ", last_name="Liddell", email="A@New.org", is_staff=True
    )
    user.refresh_from_db()
    assert (user.first_name, user.last_name, user.email, user.is_staff) == ("Alice", "Liddell", "a@new.org", True)


def test_a_signed_up_users_username_follows_their_email(staff, mailoutbox):
    user = _signup()
    users.user_update(actor=staff, user=user, first_name="", last_name="", email="moved@example.com", is_staff=False)
    user.refresh_from_db()
    assert user.username == user.email == "moved@example.com"


def test_other_usernames_stay(staff, user):
    users.user_update(actor=staff, user=user, first_name="", last_name="", email="moved@example.com", is_staff=False)
    user.refresh_from_db()
    assert (user.username, user.email) == ("alice", "moved@example.com")


def test_an_email_belongs_to_one_account(staff, user, outsider):
    with pytest.raises(ValidationError, match="Another account"):
        users.user_update(
            actor=staff, user=user, first_name="", last_name="", email="MALLORY@example.com", is_staff=False
        )


def test_staff_cannot_remove_their_own_staff_flag(staff):
    with pytest.raises(ValidationError, match="your own staff access"):
        users.user_update(actor=staff, user=staff, first_name="", last_name="", email=staff.email, is_staff=False)


def test_only_staff_manage_users(user, outsider):
    with pytest.raises(PermissionDenied):
        users.user_set_active(actor=outsider, user=user, active=False)
    with pytest.raises(PermissionDenied):
        users.user_credit_grant(actor=outsider, user=outsider, amount=Decimal("100"))
    user.refresh_from_db()
    assert user.is_active


def test_only_a_superuser_changes_a_superuser(staff, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root password long")
    with pytest.raises(PermissionDenied):
        users.user_set_active(actor=staff, user=root, active=False)
    other_root = django_user_model.objects.create_superuser("root2", "root2@example.com", "root password long")
    users.user_set_active(actor=other_root, user=root, active=False)
    root.refresh_from_db()
    assert not root.is_active


def test_staff_cannot_disable_themselves(staff):
    with pytest.raises(ValidationError):
        users.user_set_active(actor=staff, user=staff, active=False)


def test_disabling_keeps_everything(staff, user, make_key):
    key, _ = make_key(user)
    users.user_set_active(actor=staff, user=user, active=False)
    user.refresh_from_db()
    assert not user.is_active
    assert user.api_keys.get() == key
    users.user_set_active(actor=staff, user=user, active=True)
    user.refresh_from_db()
    assert user.is_active


def test_enabling_an_unverified_account_verifies_it(staff, mailoutbox):
    user = _signup()
    users.user_set_active(actor=staff, user=user, active=True)
    assert not EmailVerification.objects.filter(user=user).exists()


def test_granting_credits_posts_to_the_ledger(staff, user):
    before = balance_of(user)
    entry = users.user_credit_grant(
        actor=staff, user=user, amount=Decimal("12.50"), note="thanks", idempotency_key="k1"
    )
    assert balance_of(user) == before + Decimal("12.50")
    assert entry.created_by == staff
    assert entry.kind == LedgerEntry.Kind.GRANT
    # The same submission twice posts once.
    users.user_credit_grant(actor=staff, user=user, amount=Decimal("12.50"), note="thanks", idempotency_key="k1")
    assert balance_of(user) == before + Decimal("12.50")


def test_a_negative_grant_cannot_take_the_balance_below_zero(staff, user):
    with pytest.raises(ValidationError):
        users.user_credit_grant(actor=staff, user=user, amount=-(balance_of(user) + 1))

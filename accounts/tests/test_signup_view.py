"""/signup/: an email and a password make an inactive account and send a verification link; the
page answers the same for an address that already has an account (which gets a notice instead)."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts.models import EmailVerification
from accounts.tests._visitors import link_in, visitor
from billing.selectors import balance_of

pytestmark = pytest.mark.django_db

PASSWORD = "a long and unusual passphrase"


def _sign_up(client, email="new@example.com", password=PASSWORD, again=None):
    return client.post(reverse("signup"), {"email": email, "password1": password, "password2": again or password})


def test_it_renders():
    response = visitor().get(reverse("signup"))
    assert response.status_code == 200
    assert b'name="email"' in response.content
    assert b"$5.00 of credits" in response.content


def test_it_works(mailoutbox, settings):
    response = _sign_up(visitor(), email="  New@Example.COM ")

    assert response.status_code == 302
    assert response.url == reverse("signup-done")
    user = get_user_model().objects.get(username="new@example.com")
    assert user.email == "new@example.com"
    assert not user.is_active  # until the link is followed
    assert user.check_password(PASSWORD)
    assert EmailVerification.objects.filter(user=user).exists()
    # The billing app's starting credit, as for every new user.
    assert balance_of(user) == Decimal(settings.SIGNUP_CREDIT_USD)

    [message] = mailoutbox
    assert message.to == ["new@example.com"]
    assert message.from_email == settings.DEFAULT_FROM_EMAIL
    assert "/signup/verify/" in link_in(message)
    assert PASSWORD not in message.body


def test_the_new_account_cannot_log_in_before_verifying(mailoutbox):
    client = visitor()
    _sign_up(client)

    response = client.post(reverse("login"), {"username": "new@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_an_existing_address_gets_a_notice_and_the_same_answer(mailoutbox, user):
    """alice@example.com has an account (username alice): the visitor cannot tell."""
    fresh = _sign_up(visitor(), email="fresh@example.com")
    mailoutbox.clear()
    taken = _sign_up(visitor(), email="ALICE@example.com")

    assert (taken.status_code, taken.url) == (fresh.status_code, fresh.url)
    assert get_user_model().objects.filter(email__iexact="alice@example.com").count() == 1
    [notice] = mailoutbox
    assert notice.to == ["alice@example.com"]
    assert "already has one" in notice.body
    assert "/signup/verify/" not in notice.body
    user.refresh_from_db()
    assert user.check_password("correct horse battery")  # untouched


def test_it_rejects_different_passwords(mailoutbox):
    response = _sign_up(visitor(), again="another passphrase entirely")
    assert response.status_code == 400
    assert b"The two passwords differ." in response.content
    assert not get_user_model().objects.filter(username="new@example.com").exists()
    assert mailoutbox == []


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", b"too short"), ("password123", b"too common"), ("84736251908", b"entirely numeric")],
)
def test_it_applies_the_password_validators(mailoutbox, password, message):
    response = _sign_up(visitor(), password=password)
    assert response.status_code == 400
    assert message in response.content
    assert mailoutbox == []


def test_it_rejects_a_bad_email(mailoutbox):
    response = _sign_up(visitor(), email="not an address")
    assert response.status_code == 400
    assert b"Enter a valid email address." in response.content


def test_it_is_throttled_per_ip(mailoutbox, settings):
    settings.ACCOUNT_EMAILS_PER_HOUR = 3
    client = visitor()
    statuses = [_sign_up(client, email=f"person{n}@example.com").status_code for n in range(4)]

    assert statuses == [302, 302, 302, 429]
    assert get_user_model().objects.filter(username__startswith="person").count() == 3
    assert len(mailoutbox) == 3


def test_it_is_throttled_per_address(mailoutbox, settings):
    """Signing up again and again with one address (to flood its inbox) is throttled from any IP."""
    settings.ACCOUNT_EMAILS_PER_HOUR = 2
    statuses = [_sign_up(visitor(), email="target@example.com").status_code for _ in range(3)]
    assert statuses == [302, 302, 429]
    assert len(mailoutbox) == 2


def test_it_can_be_turned_off(settings):
    settings.SIGNUP_ENABLED = False
    assert visitor().get(reverse("signup")).status_code == 404
    assert b"Create an account" not in visitor().get(reverse("login")).content


def test_the_login_page_links_to_it():
    assert reverse("signup").encode() in visitor().get(reverse("login")).content


def test_a_logged_in_user_is_sent_to_the_dashboard(client, user):
    client.force_login(user)
    response = client.get(reverse("signup"))
    assert response.status_code == 302

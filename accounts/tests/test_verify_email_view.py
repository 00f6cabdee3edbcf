"""/signup/verify/<uid>/<token>/: the emailed link opens a page whose button activates the
account; a used, forged or stale link does nothing. /signup/resend/ sends a new link."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts import users
from accounts.models import EmailVerification
from accounts.tests._visitors import link_in, path_of, visitor

pytestmark = pytest.mark.django_db

PASSWORD = "a long and unusual passphrase"


@pytest.fixture
def signed_up(mailoutbox):
    """(client, user, path of the verification link)."""
    client = visitor()
    client.post(reverse("signup"), {"email": "new@example.com", "password1": PASSWORD, "password2": PASSWORD})
    user = get_user_model().objects.get(username="new@example.com")
    [message] = mailoutbox
    mailoutbox.clear()
    return client, user, path_of(link_in(message))


def test_the_link_opens_a_page_that_changes_nothing(signed_up):
    client, user, link = signed_up
    response = client.get(link)
    assert response.status_code == 200
    assert b"Verify my email address" in response.content
    user.refresh_from_db()
    assert not user.is_active


def test_it_works(signed_up):
    client, user, link = signed_up
    response = client.post(link)

    assert response.status_code == 302
    assert response.url == reverse("login")
    user.refresh_from_db()
    assert user.is_active
    assert not EmailVerification.objects.filter(user=user).exists()
    # Now the owner can log in.
    login = client.post(reverse("login"), {"username": "new@example.com", "password": PASSWORD})
    assert login.status_code == 302
    assert client.get(reverse("dashboard:keys")).status_code == 200


def test_a_used_link_does_nothing(signed_up):
    client, _user, link = signed_up
    client.post(link)
    response = client.post(link)
    assert response.status_code == 400
    assert b"This link does not work" in response.content


def test_a_forged_token_is_refused(signed_up):
    client, user, link = signed_up
    forged = link.rstrip("/").rsplit("/", 1)[0] + "/abc-0123456789abcdef/"
    assert client.post(forged).status_code == 400
    user.refresh_from_db()
    assert not user.is_active


def test_a_password_reset_token_is_not_a_verification_token(signed_up):
    from django.contrib.auth.tokens import default_token_generator

    client, user, link = signed_up
    uid = link.strip("/").split("/")[-2]
    other = reverse("verify-email", args=[uid, default_token_generator.make_token(user)])
    assert client.post(other).status_code == 400


def test_a_stale_link_is_refused(signed_up, settings):
    client, _user, link = signed_up
    settings.PASSWORD_RESET_TIMEOUT = -1
    assert client.post(link).status_code == 400


def test_a_disabled_user_is_not_enabled_by_an_old_link(signed_up, staff):
    """A user staff disabled has no pending verification: their old link cannot bring them back."""
    client, user, link = signed_up
    users.user_set_active(actor=staff, user=user, active=True)
    users.user_set_active(actor=staff, user=user, active=False)
    assert client.post(link).status_code == 400
    user.refresh_from_db()
    assert not user.is_active


def test_resend_sends_a_new_working_link(signed_up, mailoutbox):
    client, user, _ = signed_up
    response = visitor().post(reverse("verification-resend"), {"email": "NEW@example.com"})
    assert response.status_code == 302
    [message] = mailoutbox
    assert message.to == ["new@example.com"]
    assert client.post(path_of(link_in(message))).status_code == 302
    user.refresh_from_db()
    assert user.is_active


def test_resend_says_the_same_for_any_address(mailoutbox, user):
    """An unknown address, an active account and a disabled one: the same answer, and no email."""
    unknown = visitor().post(reverse("verification-resend"), {"email": "nobody@example.com"})
    active = visitor().post(reverse("verification-resend"), {"email": "alice@example.com"})
    assert (unknown.status_code, unknown.url) == (active.status_code, active.url) == (302, reverse("signup-done"))
    assert mailoutbox == []


def test_resend_does_not_wake_a_disabled_account(mailoutbox, user, staff):
    users.user_set_active(actor=staff, user=user, active=False)
    visitor().post(reverse("verification-resend"), {"email": "alice@example.com"})
    assert mailoutbox == []


def test_resend_is_throttled(mailoutbox, settings, signed_up):
    settings.ACCOUNT_EMAILS_PER_HOUR = 2
    client = visitor()
    statuses = [client.post(reverse("verification-resend"), {"email": "new@example.com"}).status_code for _ in range(3)]
    assert statuses == [302, 302, 429]
    assert len(mailoutbox) == 2

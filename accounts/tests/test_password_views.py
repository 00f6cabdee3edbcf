"""Password reset (Django's views, the dashboard's templates, throttled, saying nothing about which
addresses have accounts) and password change."""

import pytest
from django.urls import reverse

from accounts.tests._visitors import link_in, path_of, visitor

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_the_reset_form_renders_in_the_dashboard():
    response = visitor().get(reverse("password_reset"))
    assert response.status_code == 200
    assert b"css/app.css" in response.content
    assert b"Reset your password" in response.content


def test_reset_works(mailoutbox, user):
    client = visitor()
    response = client.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert response.status_code == 302
    assert response.url == reverse("password_reset_done")

    [message] = mailoutbox
    assert message.to == ["alice@example.com"]
    assert message.subject == "Reset your GPU Cloud password"
    link = path_of(link_in(message))
    # Django moves the token into the session and redirects to a URL without it.
    form = client.get(link, follow=True)
    assert b"Choose a new password" in form.content
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a brand new passphrase", "new_password2": "a brand new passphrase"},
    )
    assert done.status_code == 302
    assert done.url == reverse("password_reset_complete")
    user.refresh_from_db()
    assert user.check_password("a brand new passphrase")
    # The link works once.
    assert b"This link does not work" in client.get(link, follow=True).content


def test_reset_says_the_same_for_an_unknown_address(mailoutbox, user):
    known = visitor().post(reverse("password_reset"), {"email": "alice@example.com"})
    unknown = visitor().post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert (known.status_code, known.url) == (unknown.status_code, unknown.url)
    assert [m.to for m in mailoutbox] == [["alice@example.com"]]


def test_reset_sends_nothing_to_a_disabled_account(mailoutbox, user):
    user.is_active = False
    user.save()
    visitor().post(reverse("password_reset"), {"email": "alice@example.com"})
    assert mailoutbox == []


def test_reset_is_throttled_per_address(mailoutbox, user, settings):
    settings.ACCOUNT_EMAILS_PER_HOUR = 2
    statuses = [visitor().post(reverse("password_reset"), {"email": "alice@example.com"}).status_code for _ in range(3)]
    assert statuses == [302, 302, 429]
    assert len(mailoutbox) == 2


def test_change_requires_login():
    response = visitor().get(reverse("password_change"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_change_works(client, user):
    client.force_login(user)
    assert b"Change your password" in client.get(reverse("password_change")).content
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "correct horse battery",
            "new_password1": "another good phrase",
            "new_password2": "another good phrase",
        },
    )
    assert response.status_code == 302
    assert response.url == reverse("password_change_done")
    user.refresh_from_db()
    assert user.check_password("another good phrase")
    # This session stays logged in.
    assert client.get(reverse("dashboard:keys")).status_code == 200


def test_change_needs_the_old_password(client, user):
    client.force_login(user)
    response = client.post(
        reverse("password_change"),
        {"old_password": "wrong", "new_password1": "another good phrase", "new_password2": "another good phrase"},
    )
    assert response.status_code == 200
    assert b"Your old password was entered incorrectly" in response.content
    user.refresh_from_db()
    assert user.check_password("correct horse battery")


def test_the_header_links_to_it(client, user):
    client.force_login(user)
    assert f'href="{reverse("password_change")}"'.encode() in client.get(reverse("dashboard:keys")).content

"""/users/: staff list and search users, edit them, disable and enable them and grant credits,
without Django admin; everyone else gets a 403."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.selectors import balance_of, ledger_for_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def operator(client, staff):
    client.force_login(staff)
    return client


def test_the_list_shows_every_user(operator, user, outsider):
    response = operator.get(reverse("users:list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "alice@example.com" in html and "mallory@example.com" in html and "oscar@example.com" in html
    assert "$5.00" in html  # the balance


def test_it_searches(operator, user, outsider):
    html = operator.get(reverse("users:list"), {"q": "MALL"}).content.decode()
    assert "mallory@example.com" in html
    assert "alice@example.com" not in html


def test_it_pages(operator, django_user_model):
    django_user_model.objects.bulk_create(
        [django_user_model(username=f"bulk{n:03}", email=f"bulk{n:03}@example.com") for n in range(60)]
    )
    first = operator.get(reverse("users:list")).content.decode()
    second = operator.get(reverse("users:list"), {"page": 2}).content.decode()
    assert "Page 1 of 2" in first
    assert "Page 2 of 2" in second
    assert sum(f"bulk{n:03}@" in first + second for n in range(60)) == 60


def test_it_is_for_staff_only(client, user):
    client.force_login(user)
    for response in (
        client.get(reverse("users:list")),
        client.get(reverse("users:edit", args=[user.pk])),
        client.post(reverse("users:set-active", args=[user.pk]), {"active": "0"}),
        client.post(reverse("users:credit", args=[user.pk]), {"amount": "100", "token": "t"}),
    ):
        assert response.status_code == 403
    user.refresh_from_db()
    assert user.is_active
    assert balance_of(user) == Decimal("5")


def test_it_requires_login(client, user):
    response = client.get(reverse("users:list"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_staff_edit_a_user(operator, user):
    response = operator.post(
        reverse("users:edit", args=[user.pk]),
        {"first_name": "Alice", "last_name": "Liddell", "email": "alice@wonderland.org", "is_staff": "on"},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert (user.get_full_name(), user.email, user.is_staff) == ("Alice Liddell", "alice@wonderland.org", True)


def test_an_edit_error_is_shown(operator, user, outsider):
    response = operator.post(
        reverse("users:edit", args=[user.pk]), {"first_name": "", "last_name": "", "email": "mallory@example.com"}
    )
    assert response.status_code == 400
    assert b"Another account has this email address." in response.content


def test_staff_disable_and_enable_a_user(operator, client, user, make_key):
    _, _key = make_key(user)
    response = operator.post(reverse("users:set-active", args=[user.pk]), {"active": "0", "next": "list"})
    assert response.status_code == 302
    assert response.url == reverse("users:list")
    user.refresh_from_db()
    assert not user.is_active
    assert b"disabled" in operator.get(reverse("users:list")).content

    operator.post(reverse("users:set-active", args=[user.pk]), {"active": "1"})
    user.refresh_from_db()
    assert user.is_active


def test_a_disabled_users_session_ends(user, staff):
    from django.test import Client

    alice, oscar = Client(), Client()
    alice.force_login(user)
    oscar.force_login(staff)
    assert alice.get(reverse("dashboard:keys")).status_code == 200
    oscar.post(reverse("users:set-active", args=[user.pk]), {"active": "0"})
    response = alice.get(reverse("dashboard:keys"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_a_disabled_users_keys_are_refused(operator, user, make_key):
    _, key = make_key(user)
    from django.test import Client

    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/v1/models").status_code == 200
    operator.post(reverse("users:set-active", args=[user.pk]), {"active": "0"})
    response = api.get("/v1/models")
    assert response.status_code == 401
    assert "disabled" in response.json()["error"]["message"]


def test_staff_cannot_disable_themselves(operator, staff):
    response = operator.post(reverse("users:set-active", args=[staff.pk]), {"active": "0"}, follow=True)
    assert b"You cannot disable your own account." in response.content
    staff.refresh_from_db()
    assert staff.is_active


def test_staff_grant_credits(operator, user, staff):
    response = operator.post(
        reverse("users:credit", args=[user.pk]), {"amount": "20", "note": "welcome", "token": "abc"}, follow=True
    )
    assert b"Posted $20.00 to alice" in response.content
    assert balance_of(user) == Decimal("25")
    entry = ledger_for_user(user).order_by("-pk").first()
    assert (entry.amount, entry.note, entry.created_by) == (Decimal("20"), "welcome", staff)
    # The same form submitted twice posts once.
    operator.post(reverse("users:credit", args=[user.pk]), {"amount": "20", "note": "welcome", "token": "abc"})
    assert balance_of(user) == Decimal("25")


def test_a_bad_grant_is_refused(operator, user):
    response = operator.post(reverse("users:credit", args=[user.pk]), {"amount": "-100", "token": "t"})
    assert response.status_code == 400
    assert balance_of(user) == Decimal("5")
    response = operator.post(reverse("users:credit", args=[user.pk]), {"amount": "0", "token": "t2"})
    assert response.status_code == 400
    assert b"Enter an amount other than zero." in response.content


def test_an_unknown_user_is_404(operator):
    assert operator.get(reverse("users:edit", args=[999999])).status_code == 404

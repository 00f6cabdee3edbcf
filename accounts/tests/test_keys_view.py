import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_lookup

pytestmark = pytest.mark.django_db

URL = reverse("dashboard:keys")
RAW_KEY = re.compile(r"gpc_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


def _create(client, **overrides):
    data = {"name": "staging backend", "rpm": "120", "scopes": ["inference", "management"], "expires_at": ""}
    data.update(overrides)
    return client.post(URL, data)


def test_it_requires_login(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={URL}"


def test_it_works(client, user, make_key):
    api_key, raw_key = make_key(user, name="my laptop")
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "my laptop" in content
    assert f"{api_key.display_prefix}…" in content
    assert reverse("dashboard:key-revoke", args=[api_key.pk]) in content
    assert raw_key not in content


def test_it_lists_only_own_keys(client, user, outsider, make_key):
    make_key(user, name="alice key")
    outsider_key, _ = make_key(outsider, name="mallory key")
    client.force_login(user)
    content = client.get(URL).content.decode()
    assert "alice key" in content
    assert "mallory key" not in content
    assert outsider_key.prefix not in content


def test_it_shows_states(client, user, make_key):
    revoked, _ = make_key(user, name="old key")
    revoked.revoked_at = timezone.now()
    revoked.save()
    expired, _ = make_key(user, name="short key", expires_at=timezone.now() + timedelta(seconds=1))
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    client.force_login(user)
    content = client.get(URL).content.decode()
    assert "state-revoked" in content
    assert "state-expired" in content
    # Only active keys can be revoked.
    assert reverse("dashboard:key-revoke", args=[revoked.pk]) not in content
    assert reverse("dashboard:key-revoke", args=[expired.pk]) not in content


def test_it_creates_key_and_shows_it_once(client, user):
    client.force_login(user)
    response = _create(client)
    assert response.status_code == 200
    content = response.content.decode()

    found = RAW_KEY.findall(content)
    assert len(found) == 1, "the plaintext key appears exactly once in the page"
    raw_key = found[0]
    assert response.context["new_key"] == raw_key
    assert "will not be shown again" in content
    assert f"{response.context['base_url']}/chat/completions" in content

    api_key = ApiKey.objects.get(user=user)
    assert api_key_lookup(raw_key) == api_key
    assert api_key.name == "staging backend"
    assert api_key.rpm == 120
    assert api_key.scopes == ["inference", "management"]
    # Only the prefix and a keyed hash are stored, never the key itself (the lookup above checks the hash).
    assert raw_key.startswith(api_key.display_prefix + "_")
    assert len(api_key.hashed_key) == 64
    stored = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert all(raw_key not in str(value) for value in stored.values())

    # Never again: not on the next page view.
    content = client.get(URL).content.decode()
    assert raw_key not in content
    assert not RAW_KEY.search(content)
    assert f"{api_key.display_prefix}…" in content


def test_it_creates_key_with_expiry(client, user):
    client.force_login(user)
    expires = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    response = _create(client, scopes=["inference"], expires_at=expires)
    assert response.status_code == 200
    api_key = ApiKey.objects.get(user=user)
    assert api_key.scopes == ["inference"]
    assert api_key.expires_at.strftime("%Y-%m-%dT%H:%M") == expires


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"rpm": "0"}, "rpm"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["root"]}, "scopes"),
        ({"expires_at": "2020-01-01T00:00"}, "expires_at"),
    ],
)
def test_it_rejects_invalid_input(client, user, overrides, field):
    client.force_login(user)
    response = _create(client, **overrides)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert response.context["new_key"] is None
    content = response.content.decode()
    assert "The key was not created" in content
    assert 'class="errorlist' in content
    assert not RAW_KEY.search(content)
    assert not ApiKey.objects.exists()


def test_it_keeps_input_on_error(client, user):
    client.force_login(user)
    response = _create(client, rpm="0")
    assert b'value="staging backend"' in response.content


def test_it_requires_csrf(user):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    response = _create(csrf_client)
    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_it_refuses_an_rpm_above_the_cap(client, user, settings):
    settings.API_KEY_MAX_RPM = 600
    client.force_login(user)

    response = _create(client, rpm="601")

    assert response.status_code == 400
    assert "at most 600" in str(response.context["form"].errors["rpm"])
    assert not ApiKey.objects.exists()


def test_staff_set_an_rpm_above_the_cap(client, staff, settings):
    settings.API_KEY_MAX_RPM = 600
    client.force_login(staff)

    response = _create(client, rpm="5000")

    assert response.status_code == 200
    assert ApiKey.objects.get(user=staff).rpm == 5000


def test_it_creates_a_key_with_budget_and_limits(client, user):
    client.force_login(user)

    response = _create(client, max_budget="5", budget_period="day", tpm="1000", max_parallel="2")

    assert response.status_code == 200
    api_key = ApiKey.objects.get(user=user)
    assert (str(api_key.max_budget), api_key.budget_period, api_key.tpm, api_key.max_parallel) == (
        "5.00000000",
        "day",
        1000,
        2,
    )


def test_it_shows_each_keys_spend_against_its_budget(client, user, make_key):
    from decimal import Decimal

    from billing.services import request_charge

    api_key, _ = make_key(user, max_budget=Decimal("2"), budget_soft_percent=50)
    request_charge(user=user, request_id="req_1", cost=Decimal("1.25"), api_key=api_key)
    client.force_login(user)

    content = client.get(URL).content.decode()

    assert "$1.25 of $2" in content
    assert "stat-warn" in content

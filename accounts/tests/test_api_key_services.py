"""accounts.services: creating, looking up and revoking API keys."""

import hashlib
import hmac
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_lookup, api_key_revoke

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Users are created for every test; the production hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


KEY_RE = re.compile(r"^gpc_(?P<prefix>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{20,})$")


def test_it_returns_a_plaintext_key(user):
    api_key, raw_key = api_key_create(user=user, name="ci", scopes=["inference"], rpm=30)

    match = KEY_RE.match(raw_key)
    assert match, raw_key
    assert match["prefix"] == api_key.prefix
    assert api_key.display_prefix == f"gpc_{api_key.prefix}"
    assert api_key.user == user
    assert api_key.name == "ci"
    assert api_key.scopes == ["inference"]
    assert api_key.rpm == 30


def test_it_stores_only_the_prefix_and_a_keyed_hash(user):
    api_key, raw_key = api_key_create(user=user, name="ci")
    secret = KEY_RE.match(raw_key)["secret"]

    row = ApiKey.objects.filter(pk=api_key.pk).values().get()
    expected = hmac.new(settings.API_KEY_HASH_SECRET.encode(), raw_key.encode(), hashlib.sha256).hexdigest()
    assert row["hashed_key"] == expected
    assert row["prefix"] == KEY_RE.match(raw_key)["prefix"]
    for column, value in row.items():
        assert raw_key not in str(value), column
        assert secret not in str(value), column


def test_it_gives_each_key_its_own_prefix_and_secret(user):
    first, first_raw = api_key_create(user=user, name="one")
    second, second_raw = api_key_create(user=user, name="two")

    assert first.prefix != second.prefix
    assert KEY_RE.match(first_raw)["secret"] != KEY_RE.match(second_raw)["secret"]


def test_it_looks_up_a_key(user):
    api_key, raw_key = api_key_create(user=user, name="ci")

    found = api_key_lookup(raw_key)

    assert found is not None
    assert found.pk == api_key.pk
    assert found.user == user


def test_it_rejects_a_tampered_secret(user):
    _, raw_key = api_key_create(user=user, name="ci")
    last = raw_key[-1]
    tampered = raw_key[:-1] + ("A" if last != "A" else "B")

    assert api_key_lookup(tampered) is None
    assert api_key_lookup(raw_key + "x") is None
    assert api_key_lookup(raw_key[:-1]) is None


def test_it_rejects_a_wrong_prefix(user):
    first, first_raw = api_key_create(user=user, name="one")
    second, _ = api_key_create(user=user, name="two")
    secret = KEY_RE.match(first_raw)["secret"]

    # Another key's prefix with this key's secret, and a prefix that is no key's.
    assert api_key_lookup(f"gpc_{second.prefix}_{secret}") is None
    unknown_prefix = "0" * 12 if first.prefix != "0" * 12 else "1" * 12
    assert api_key_lookup(f"gpc_{unknown_prefix}_{secret}") is None


@pytest.mark.parametrize(
    "garbage",
    ["", "gpc_", "gpc__", "gpc_abc", "gpc_abc_", "sk-proj-abcdef", "Bearer gpc_x_y", "gpc_\x00_\x00", "🔑" * 20],
)
def test_it_rejects_garbage(user, garbage):
    api_key_create(user=user, name="ci")

    assert api_key_lookup(garbage) is None


def test_it_revokes_a_key(user):
    api_key, raw_key = api_key_create(user=user, name="ci")
    before = timezone.now()

    api_key_revoke(api_key=api_key)

    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert before <= api_key.revoked_at <= timezone.now()
    assert api_key.is_revoked
    assert not api_key.is_active
    # Lookup still finds the key (auth decides what a revoked key means).
    assert api_key_lookup(raw_key).is_revoked


def test_it_keeps_the_first_revocation_time(user):
    api_key, _ = api_key_create(user=user, name="ci")
    api_key_revoke(api_key=api_key)
    api_key.refresh_from_db()
    first = api_key.revoked_at

    api_key_revoke(api_key=api_key)

    api_key.refresh_from_db()
    assert api_key.revoked_at == first


def test_it_uses_the_default_rpm(user, settings):
    settings.API_KEY_DEFAULT_RPM = 17

    api_key, _ = api_key_create(user=user, name="ci")

    assert api_key.rpm == 17


def test_it_cleans_scopes(user):
    api_key, _ = api_key_create(user=user, name="ci", scopes=[" management", "inference", "management", ""])

    assert api_key.scopes == ["management", "inference"]


@pytest.mark.parametrize("scopes", [["admin"], ["inference", "root"], [], [""]])
def test_it_rejects_invalid_scopes(user, scopes):
    with pytest.raises(ValidationError):
        api_key_create(user=user, name="ci", scopes=scopes)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("rpm", [0, -1])
def test_it_rejects_invalid_rpm(user, rpm):
    with pytest.raises(ValidationError):
        api_key_create(user=user, name="ci", rpm=rpm)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("delta", [timedelta(seconds=-1), timedelta(days=-30), timedelta(0)])
def test_it_rejects_an_expiry_that_is_not_in_the_future(user, delta):
    with pytest.raises(ValidationError):
        api_key_create(user=user, name="ci", expires_at=timezone.now() + delta)
    assert not ApiKey.objects.exists()


def test_it_accepts_a_future_expiry(user):
    expires_at = timezone.now() + timedelta(days=1)

    api_key, _ = api_key_create(user=user, name="ci", expires_at=expires_at)

    api_key.refresh_from_db()
    assert api_key.expires_at == expires_at
    assert api_key.is_active


def test_it_caps_a_users_own_rpm(user, settings):
    settings.API_KEY_MAX_RPM = 600

    with pytest.raises(ValidationError) as caught:
        api_key_create(user=user, name="ci", rpm=601)

    assert "at most 600" in caught.value.message_dict["rpm"][0]
    assert not ApiKey.objects.exists()
    assert api_key_create(user=user, name="ci", rpm=600)[0].rpm == 600


def test_staff_go_above_the_cap(user, staff, settings):
    settings.API_KEY_MAX_RPM = 600

    assert api_key_create(user=staff, name="ops", rpm=5000)[0].rpm == 5000
    # An operator's grant (e.g. manage.py createapikey) for a user.
    assert api_key_create(user=user, name="batch", rpm=5000, granted_by_staff=True)[0].rpm == 5000


@pytest.mark.parametrize(
    "limits",
    [
        {"rpm": ApiKey.RPM_MAX + 1},
        {"rpm": 2**63},  # past any database integer column
        {"tpm": ApiKey.TPM_MAX + 1},
        {"tpm": 2**63},
        {"max_parallel": ApiKey.MAX_PARALLEL_MAX + 1},
    ],
)
def test_even_staff_stay_within_the_limits_bounds(staff, limits):
    with pytest.raises(ValidationError):
        api_key_create(user=staff, name="ops", **limits)
    assert not ApiKey.objects.exists()

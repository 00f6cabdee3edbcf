"""API keys over REST: ``GET/POST /api/keys``, ``GET/PATCH/DELETE /api/keys/{id}``."""

import json
from decimal import Decimal

import pytest

from accounts.models import ApiKey
from accounts.services import api_key_lookup

pytestmark = pytest.mark.django_db

URL = "/api/keys"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def manager(user, make_key):
    """An unlimited management key of ``user`` and its Authorization header."""
    api_key, raw_key = make_key(user, name="manager")
    return api_key, {"Authorization": f"Bearer {raw_key}"}


def post(client, headers, body):
    return client.post(URL, json.dumps(body), content_type="application/json", headers=headers)


def patch(client, headers, key_id, body):
    return client.patch(f"{URL}/{key_id}", json.dumps(body), content_type="application/json", headers=headers)


def test_it_lists_the_owners_keys(client, user, outsider, make_key, manager):
    make_key(outsider, name="not mine")

    response = client.get(URL, headers=manager[1])

    assert response.status_code == 200
    data = response.json()["data"]
    assert [k["name"] for k in data] == ["manager"]
    assert data[0]["key_prefix"] == manager[0].display_prefix
    assert "key" not in data[0] and "hashed_key" not in data[0]


def test_it_creates_a_key_and_shows_it_once(client, user, manager):
    response = post(
        client,
        manager[1],
        {"name": "batch", "scopes": ["inference"], "max_budget": 5, "budget_period": "day", "tpm": 1000},
    )

    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    api_key = api_key_lookup(body["key"])
    assert api_key.user == user
    assert (api_key.max_budget, api_key.budget_period, api_key.tpm) == (Decimal("5"), "day", 1000)
    assert body["max_budget"] == 5.0
    listed = client.get(f"{URL}/{api_key.pk}", headers=manager[1]).json()
    assert "key" not in listed
    assert listed["spend_this_period"] == 0.0


def test_a_limited_key_cannot_create_keys(client, user, make_key):
    _, raw_key = make_key(user, max_budget=Decimal("1"))

    response = post(client, {"Authorization": f"Bearer {raw_key}"}, {"name": "escape"})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "limited_key"
    assert ApiKey.objects.count() == 1


def test_a_key_cannot_grant_a_scope_it_lacks(client, user, make_key):
    _, raw_key = make_key(user, scopes=[ApiKey.Scope.MANAGEMENT])

    response = post(client, {"Authorization": f"Bearer {raw_key}"}, {"name": "x", "scopes": ["inference"]})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "scopes"


def test_it_validates_limits(client, manager):
    response = post(client, manager[1], {"name": "x", "tpm": 0})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tpm"


def test_it_refuses_an_rpm_above_the_accounts_cap(client, manager, settings):
    response = post(client, manager[1], {"name": "x", "rpm": settings.API_KEY_MAX_RPM + 1})

    assert response.status_code == 400


@pytest.mark.parametrize("field", ["rpm", "tpm", "max_parallel"])
def test_a_limit_past_its_bound_is_a_400_not_a_500(client, manager, field):
    """Found by the fuzz test: 2**63 overflowed the database's integer column."""
    created = post(client, manager[1], {"name": "x", field: 2**63})
    changed = patch(client, manager[1], manager[0].pk, {field: 2**63})

    assert (created.status_code, created.json()["error"]["param"]) == (400, field)
    assert (changed.status_code, changed.json()["error"]["param"]) == (400, field)


def test_a_key_may_tighten_its_own_limits(client, manager):
    response = patch(client, manager[1], manager[0].pk, {"max_budget": "2.50", "tpm": 500, "max_parallel": 2})

    assert response.status_code == 200
    manager[0].refresh_from_db()
    assert (manager[0].max_budget, manager[0].tpm, manager[0].max_parallel) == (Decimal("2.5"), 500, 2)


@pytest.mark.parametrize(
    "change",
    [
        {"max_budget": "5.01"},
        {"max_budget": None},
        {"budget_period": "day"},
        {"tpm": 1001},
        {"tpm": None},
        {"max_parallel": 5},
        {"rpm": 61},
    ],
)
def test_a_key_cannot_raise_its_own_limits(client, user, make_key, change):
    api_key, raw_key = make_key(user, rpm=60, max_budget=Decimal("5"), tpm=1000, max_parallel=4)

    response = patch(client, {"Authorization": f"Bearer {raw_key}"}, api_key.pk, change)

    assert response.status_code == 400, response.json()
    api_key.refresh_from_db()
    assert (api_key.rpm, api_key.max_budget, api_key.budget_period, api_key.tpm, api_key.max_parallel) == (
        60,
        Decimal("5"),
        "month",
        1000,
        4,
    )


def test_an_unlimited_key_may_raise_another_keys_limits(client, user, make_key, manager):
    other, _ = make_key(user, name="other", max_budget=Decimal("1"))

    response = patch(client, manager[1], other.pk, {"max_budget": 10, "name": "renamed"})

    assert response.status_code == 200
    other.refresh_from_db()
    assert (other.max_budget, other.name) == (Decimal("10"), "renamed")


def test_a_limited_key_may_only_tighten_other_keys(client, user, make_key):
    _, raw_key = make_key(user, max_parallel=1)
    other, _ = make_key(user, name="other", tpm=100)

    response = patch(client, {"Authorization": f"Bearer {raw_key}"}, other.pk, {"tpm": 200})

    assert response.status_code == 400


def test_a_key_can_be_made_and_kept_trusted_only(client, manager):
    created = post(client, manager[1], {"name": "careful", "scopes": ["inference", "management"], "trusted_only": True})
    assert (created.status_code, created.json()["trusted_only"]) == (201, True)
    careful_id, headers = created.json()["id"], {"Authorization": f"Bearer {created.json()['key']}"}

    # It may not drop its own choice, nor create a key without it; an unlimited key may drop it.
    loosened = patch(client, headers, careful_id, {"trusted_only": False})
    untrusted_child = post(client, headers, {"name": "child"})

    assert (loosened.status_code, loosened.json()["error"]["param"]) == (400, "trusted_only")
    assert (untrusted_child.status_code, untrusted_child.json()["error"]["param"]) == (400, "trusted_only")
    assert ApiKey.objects.get(pk=careful_id).trusted_only
    assert patch(client, manager[1], careful_id, {"trusted_only": False}).json()["trusted_only"] is False


def test_delete_revokes(client, user, make_key, manager):
    other, _ = make_key(user, name="other")

    response = client.delete(f"{URL}/{other.pk}", headers=manager[1])

    assert response.status_code == 204
    other.refresh_from_db()
    assert other.is_revoked


def test_another_users_key_is_not_found(client, outsider, make_key, manager):
    theirs, _ = make_key(outsider)

    assert client.get(f"{URL}/{theirs.pk}", headers=manager[1]).status_code == 404
    assert patch(client, manager[1], theirs.pk, {"name": "mine"}).status_code == 404
    assert client.delete(f"{URL}/{theirs.pk}", headers=manager[1]).status_code == 404
    theirs.refresh_from_db()
    assert not theirs.is_revoked


def test_it_requires_the_management_scope(client, user, make_key):
    _, raw_key = make_key(user, scopes=[ApiKey.Scope.INFERENCE])

    assert client.get(URL, headers={"Authorization": f"Bearer {raw_key}"}).status_code == 403

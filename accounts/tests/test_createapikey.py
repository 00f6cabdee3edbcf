"""The ``createapikey`` management command."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_lookup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Users are created for every test; the production hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def createapikey(*args) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("createapikey", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def last_line(output: str) -> str:
    return output.rstrip("\n").splitlines()[-1]


def test_it_works(user, catalog, client):
    stdout, stderr = createapikey("alice", "--name", "ci")

    raw_key = last_line(stdout)
    api_key = api_key_lookup(raw_key)
    assert api_key is not None
    assert api_key.user == user
    assert api_key.name == "ci"
    assert api_key.scopes == [ApiKey.Scope.INFERENCE]
    assert api_key.expires_at is None
    assert api_key.display_prefix in stderr
    assert raw_key not in stderr
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {raw_key}"})
    assert response.status_code == 200


def test_it_honours_rpm_and_scopes(user):
    stdout, _ = createapikey("alice", "--name", "ops", "--rpm", "7", "--scopes", "management,inference")

    api_key = api_key_lookup(last_line(stdout))
    assert api_key.rpm == 7
    assert api_key.scopes == [ApiKey.Scope.MANAGEMENT, ApiKey.Scope.INFERENCE]


def test_it_honours_expires_in_days(user):
    stdout, _ = createapikey("alice", "--name", "tmp", "--expires-in-days", "3")

    api_key = api_key_lookup(last_line(stdout))
    expected = timezone.now() + timedelta(days=3)
    assert abs(api_key.expires_at - expected) < timedelta(minutes=1)


@pytest.mark.parametrize("days", ["0", "-1"])
def test_it_rejects_an_expiry_that_is_not_in_the_future(user, days):
    # Asking for a key that expires must never give one that does not.
    with pytest.raises(CommandError):
        createapikey("alice", "--name", "tmp", "--expires-in-days", days)
    assert not ApiKey.objects.exists()


def test_it_rejects_an_unknown_user(user):
    with pytest.raises(CommandError, match="nobody"):
        createapikey("nobody", "--name", "ci")
    assert not ApiKey.objects.exists()


def test_it_rejects_an_unknown_scope(user):
    with pytest.raises(CommandError, match="superpowers"):
        createapikey("alice", "--name", "ci", "--scopes", "inference,superpowers")
    assert not ApiKey.objects.exists()


def test_it_rejects_an_rpm_below_one(user):
    with pytest.raises(CommandError):
        createapikey("alice", "--name", "ci", "--rpm", "0")
    assert not ApiKey.objects.exists()


def test_it_sets_budget_and_limits(user):
    stdout, _ = createapikey(
        "alice", "--name", "batch", "--budget", "5", "--budget-period", "day", "--tpm", "100000", "--max-parallel", "4"
    )

    api_key = api_key_lookup(last_line(stdout))
    assert api_key.max_budget == Decimal("5")
    assert api_key.budget_period == ApiKey.BudgetPeriod.DAY
    assert api_key.tpm == 100_000
    assert api_key.max_parallel == 4


def test_limits_default_to_none(user):
    stdout, _ = createapikey("alice", "--name", "free")

    api_key = api_key_lookup(last_line(stdout))
    assert (api_key.max_budget, api_key.budget_period, api_key.tpm, api_key.max_parallel) == (None, "month", None, None)


@pytest.mark.parametrize(
    "args",
    [["--budget", "-1"], ["--budget", "five"], ["--tpm", "0"], ["--max-parallel", "0"], ["--budget-period", "week"]],
)
def test_it_rejects_bad_limits(user, args):
    with pytest.raises(CommandError):
        createapikey("alice", "--name", "ci", *args)
    assert not ApiKey.objects.exists()

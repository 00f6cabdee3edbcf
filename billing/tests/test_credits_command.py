"""``manage.py credits``."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing.models import LedgerEntry
from billing.selectors import balance_of

pytestmark = pytest.mark.django_db


def credits(*args) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("credits", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def last_line(output: str) -> str:
    return output.rstrip("\n").splitlines()[-1]


def test_it_prints_the_balance(user):
    stdout, _ = credits("alice")

    assert last_line(stdout) == "5.00"


def test_it_adds_credits(user):
    stdout, stderr = credits("alice", "--add", "10.00", "--note", "conference")

    assert last_line(stdout) == "15.00"
    assert "grant" in stderr.lower()
    entry = LedgerEntry.objects.filter(account=user).latest("account_version")
    assert (entry.kind, entry.amount, entry.note) == ("grant", Decimal("10.00"), "conference")


def test_a_negative_amount_is_an_adjustment(user):
    stdout, _ = credits("alice", "--add", "-1.25")

    assert last_line(stdout) == "3.75"
    assert LedgerEntry.objects.filter(account=user).latest("account_version").kind == "adjustment"


def test_it_refuses_to_go_below_zero(user):
    with pytest.raises(CommandError, match="below"):
        credits("alice", "--add", "-5.01")
    assert balance_of(user) == Decimal("5.00")


def test_it_refuses_a_bad_amount(user):
    with pytest.raises(CommandError, match="not an amount"):
        credits("alice", "--add", "ten")


def test_it_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        credits("nobody")


def test_it_shows_sub_cent_balances(user):
    stdout, _ = credits("alice", "--add", "0.0001")

    assert last_line(stdout) == "5.0001"

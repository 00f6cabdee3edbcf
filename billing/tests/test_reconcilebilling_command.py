"""``manage.py reconcilebilling``."""

import uuid
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing import services
from billing.models import BillingAccount
from inference.models import UsageRecord

pytestmark = pytest.mark.django_db


def reconcile() -> str:
    stdout = StringIO()
    call_command("reconcilebilling", stdout=stdout)
    return stdout.getvalue()


def usage(user, cost: str, request_id: str | None = None) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=request_id or f"req_{uuid.uuid4().hex}",
        user=user,
        endpoint="chat.completions",
        status_code=200,
        cost=Decimal(cost),
    )


def test_it_passes_when_everything_agrees(user):
    record = usage(user, "0.0001")
    services.request_charge(user=user, request_id=record.request_id, cost=record.cost)
    usage(user, "0")  # a free request needs no charge

    assert "agree" in reconcile()


def test_it_finds_a_balance_that_is_not_the_ledger_sum(user):
    BillingAccount.objects.filter(user=user).update(balance=Decimal("6.00"))

    with pytest.raises(CommandError, match="1 difference"):
        reconcile()


def test_it_prints_each_difference(user):
    BillingAccount.objects.filter(user=user).update(balance=Decimal("6.00"))
    usage(user, "0.0002", "req_uncharged")
    record = usage(user, "0.0003", "req_wrong")
    services.request_charge(user=user, request_id=record.request_id, cost=Decimal("0.0004"))
    services.request_charge(user=user, request_id="req_orphan", cost=Decimal("0.0001"))
    stdout = StringIO()

    with pytest.raises(CommandError, match="4 difference"):
        call_command("reconcilebilling", stdout=stdout)

    output = stdout.getvalue()
    assert "account alice: balance 5.9995 but its ledger sums to 4.9995 (difference 1.00)" in output
    assert "request req_uncharged: usage record costs 0.0002" in output and "no charge" in output
    assert "request req_wrong: charged 0.0004 but its usage record costs 0.0003" in output
    assert "request req_orphan: charged 0.0001" in output and "no usage record" in output


def test_the_exit_status_is_non_zero(user):
    BillingAccount.objects.filter(user=user).update(balance=Decimal("6.00"))

    from django.core.management import execute_from_command_line

    with pytest.raises(SystemExit) as exit_:
        execute_from_command_line(["manage.py", "reconcilebilling"])
    assert exit_.value.code == 1

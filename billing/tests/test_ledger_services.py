"""billing.services: the ledger, balances, grants, top-ups, adjustments, charges, signup credit."""

import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from billing import services
from billing.models import BillingAccount, LedgerEntry
from billing.selectors import balance_of

pytestmark = pytest.mark.django_db


def test_new_users_get_the_signup_credit(user, settings):
    entry = LedgerEntry.objects.get(account=user)

    assert entry.kind == LedgerEntry.Kind.GRANT
    assert entry.amount == Decimal("5.00")
    assert entry.idempotency_key == f"signup:{user.pk}"
    assert balance_of(user) == Decimal("5.00")


def test_signup_credit_is_granted_once(user):
    services.signup_credit_grant(user)
    services.signup_credit_grant(user)

    assert LedgerEntry.objects.filter(account=user).count() == 1
    assert balance_of(user) == Decimal("5.00")


def test_signup_credit_follows_the_setting(django_user_model, settings):
    settings.SIGNUP_CREDIT_USD = "0"
    bob = django_user_model.objects.create_user("bob", password="x")

    assert not LedgerEntry.objects.filter(account=bob).exists()
    assert BillingAccount.objects.get(user=bob).balance == 0


def test_grant_moves_the_balance_in_the_same_transaction(user, staff):
    with transaction.atomic():
        entry = services.credit_grant(user=user, amount=Decimal("10.00"), created_by=staff, note="welcome")
        # Inside the transaction that wrote the entry, the balance already includes it.
        assert BillingAccount.objects.get(user=user).balance == Decimal("15.00")
        transaction.set_rollback(True)

    assert not LedgerEntry.objects.filter(pk=entry.pk).exists()
    assert balance_of(user) == Decimal("5.00")


def test_entries_record_balance_and_version(user, staff):
    entry = services.credit_grant(user=user, amount="2.5", created_by=staff)

    assert entry.balance_after == Decimal("7.50")
    assert entry.account_version == 2
    assert entry.created_by == staff
    assert BillingAccount.objects.get(user=user).version == 2


def test_money_is_never_a_float(user):
    with pytest.raises(TypeError):
        services.credit_grant(user=user, amount=1.5)


def test_it_refuses_more_than_eight_places(user):
    with pytest.raises(ValidationError):
        services.credit_grant(user=user, amount="0.000000001")


def test_grant_must_be_positive(user):
    with pytest.raises(ValidationError):
        services.credit_grant(user=user, amount="-1")


def test_topup_is_idempotent_on_the_provider_event(user):
    first = services.topup(user=user, amount=Decimal("20"), provider="stripe", event_id="evt_1")
    again = services.topup(user=user, amount=Decimal("20"), provider="stripe", event_id="evt_1")

    assert again.pk == first.pk
    assert balance_of(user) == Decimal("25.00")
    assert first.kind == LedgerEntry.Kind.TOPUP
    assert first.reference == "evt_1"


def test_an_idempotency_key_cannot_carry_another_amount(user):
    services.topup(user=user, amount=Decimal("20"), provider="stripe", event_id="evt_1")

    with pytest.raises(ValidationError, match="already used"):
        services.topup(user=user, amount=Decimal("30"), provider="stripe", event_id="evt_1")


def test_negative_adjustment_is_refused_below_zero(user, staff):
    with pytest.raises(ValidationError, match="below"):
        services.adjustment(user=user, amount=Decimal("-5.01"), created_by=staff)

    services.adjustment(user=user, amount=Decimal("-5.00"), created_by=staff, note="correction")
    assert balance_of(user) == Decimal("0")


def test_staff_credit_picks_grant_or_adjustment(user, staff):
    assert services.staff_credit(user=user, amount="3", created_by=staff).kind == LedgerEntry.Kind.GRANT
    assert services.staff_credit(user=user, amount="-1", created_by=staff).kind == LedgerEntry.Kind.ADJUSTMENT
    assert balance_of(user) == Decimal("7.00")


def test_request_charge_is_written_once_per_request(user, make_key):
    api_key, _ = make_key(user)
    first = services.request_charge(user=user, request_id="req_1", cost=Decimal("0.0001234"), api_key=api_key)
    again = services.request_charge(user=user, request_id="req_1", cost=Decimal("0.0001234"), api_key=api_key)

    assert again.pk == first.pk
    assert first.amount == Decimal("-0.0001234")
    assert first.reference == "req_1"
    assert balance_of(user) == Decimal("4.9998766")


def test_a_zero_charge_posts_nothing(user):
    assert services.request_charge(user=user, request_id="req_0", cost=Decimal("0")) is None
    assert LedgerEntry.objects.filter(account=user).count() == 1


def test_refund_gives_back_a_charge_once(user):
    services.request_charge(user=user, request_id="req_1", cost=Decimal("1"))
    services.request_refund(request_id="req_1")
    services.request_refund(request_id="req_1")

    assert balance_of(user) == Decimal("5.00")


def test_entries_cannot_be_edited_or_deleted(user):
    entry = LedgerEntry.objects.get(account=user)

    entry.amount = Decimal("1000")
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=Decimal("1000"))
    with pytest.raises(TypeError):
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    assert LedgerEntry.objects.get(pk=entry.pk).amount == Decimal("5.00")


def _in_threads(count: int, work) -> list[Exception]:
    errors = []

    def run(index):
        try:
            work(index)
        except Exception as error:  # reported by the caller
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_grants_are_all_counted(user):
    errors = _in_threads(10, lambda i: services.credit_grant(user=user, amount=Decimal("0.10"), note=str(i)))

    assert errors == []
    account = BillingAccount.objects.get(user=user)
    assert account.balance == Decimal("6.00")
    assert account.version == 11
    versions = sorted(LedgerEntry.objects.filter(account=user).values_list("account_version", flat=True))
    assert versions == list(range(1, 12))


@pytest.mark.django_db(transaction=True)
def test_concurrent_postings_of_one_key_apply_once(user):
    errors = _in_threads(8, lambda i: services.topup(user=user, amount=Decimal("1"), provider="test", event_id="evt"))

    assert errors == []
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.TOPUP).count() == 1
    assert balance_of(user) == Decimal("6.00")


def test_the_demo_admin_gets_the_signup_credit(db):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("createsuperuser", "--noinput", username="admin", email="admin@example.com", verbosity=0)

    assert balance_of(get_user_model().objects.get(username="admin")) == Decimal("5.00")

"""Bring data from before billing into it: a first price version for every catalog model, and a
billing account with the signup credit for every existing user (the demo admin included)."""

from decimal import Decimal

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def forwards(apps, schema_editor):
    CatalogModel = apps.get_model("deployments", "CatalogModel")
    PriceVersion = apps.get_model("billing", "PriceVersion")
    BillingAccount = apps.get_model("billing", "BillingAccount")
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    now = timezone.now()
    for model in CatalogModel.objects.all():
        if not PriceVersion.objects.filter(model=model).exists():
            PriceVersion.objects.create(
                model=model,
                model_name=model.model_id,
                price_input_per_million=model.price_input_per_million,
                price_output_per_million=model.price_output_per_million,
                effective_from=model.created_at or now,
            )
    credit = Decimal(settings.SIGNUP_CREDIT_USD).quantize(Decimal("0.00000001"))
    for user in User.objects.all():
        if BillingAccount.objects.filter(user=user).exists():
            continue
        if credit > 0:
            BillingAccount.objects.create(user=user, balance=credit, version=1)
            LedgerEntry.objects.create(
                account=user,
                amount=credit,
                kind="grant",
                idempotency_key=f"signup:{user.pk}",
                note="Signup credit",
                balance_after=credit,
                account_version=1,
                created_at=now,
            )
        else:
            BillingAccount.objects.create(user=user)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("deployments", "0002_catalog_routing_replicas"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]

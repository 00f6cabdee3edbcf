"""Money: an append-only ledger, the balance it adds up to, and versioned prices.

Amounts are ``Decimal`` with 8 decimal places (USD); nothing here ever holds a float.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

MONEY = {"max_digits": 18, "decimal_places": 8}
PRICE = {"max_digits": 10, "decimal_places": 4}


class BillingAccount(models.Model):
    """One per user: the balance, kept in the same transaction as every ledger entry.

    ``version`` counts the account's ledger entries; each entry carries the version it brought
    the account to, so Redis (billing.admission) can tell which entries a balance it read includes.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="billing_account")
    balance = models.DecimalField("balance (USD)", default=Decimal("0"), **MONEY)
    version = models.PositiveBigIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "billing account"

    def __str__(self) -> str:
        return f"{self.user} ${self.balance}"


class LedgerEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Ledger entries are append-only: post a correcting entry instead.")

    def delete(self):
        raise TypeError("Ledger entries are append-only: post a correcting entry instead.")


class LedgerEntry(models.Model):
    """One movement of money. Append-only: written by billing.services, never edited or deleted."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Credit grant"
        TOPUP = "topup", "Top-up"
        CHARGE = "charge", "Request charge"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"
        HOST_EARNING = "host_earning", "Host earning"
        PAYOUT = "payout", "Payout"

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries")
    amount = models.DecimalField("amount (USD)", help_text="Positive adds to the balance.", **MONEY)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    idempotency_key = models.CharField(max_length=200, unique=True)
    reference = models.CharField(max_length=200, blank=True, help_text="Request id, provider event id, …")
    note = models.CharField(max_length=500, blank=True)
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    balance_after = models.DecimalField("balance after (USD)", **MONEY)
    account_version = models.PositiveBigIntegerField(editable=False)
    created_at = models.DateTimeField(db_index=True)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["account", "-created_at"]),
            models.Index(fields=["api_key", "kind", "created_at"]),
            models.Index(fields=["account", "account_version"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.idempotency_key})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Ledger entries are append-only: post a correcting entry instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Ledger entries are append-only: post a correcting entry instead.")


class PriceVersion(models.Model):
    """A catalog model's prices from ``effective_from`` until the next version. A request is
    charged from the version in force when it was admitted; a price change adds a version."""

    model = models.ForeignKey(
        "deployments.CatalogModel", null=True, on_delete=models.SET_NULL, related_name="price_versions"
    )
    model_name = models.CharField(max_length=200, help_text="The catalog id when this version was made.")
    price_input_per_million = models.DecimalField("price per million input tokens (USD)", **PRICE)
    price_output_per_million = models.DecimalField("price per million output tokens (USD)", **PRICE)
    # Supply and demand (billing.pricing): the prices above are the catalog's times this multiplier.
    multiplier = models.DecimalField(max_digits=6, decimal_places=3, default=Decimal("1"))
    effective_from = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-effective_from", "-id"]
        get_latest_by = ["effective_from", "id"]

    def __str__(self) -> str:
        prices = f"${self.price_input_per_million}/${self.price_output_per_million}"
        return f"{self.model_name} {prices} from {self.effective_from:%Y-%m-%d %H:%M}"


MULTIPLIER = {"max_digits": 6, "decimal_places": 3}


class DynamicPrice(models.Model):
    """A catalog model whose price floats with supply and demand: the catalog's prices times a
    multiplier between ``floor`` and ``ceiling``, moved by utilisation (billing.pricing). Each
    change is a new PriceVersion; a request pays the version in force when it was admitted."""

    model = models.OneToOneField("deployments.CatalogModel", on_delete=models.CASCADE, related_name="dynamic_price")
    enabled = models.BooleanField(default=True)
    floor = models.DecimalField(
        "multiplier floor", default=Decimal("1"), help_text="The multiplier when the model is idle, e.g. 0.8.",
        validators=[MinValueValidator(Decimal("0.01"))], **MULTIPLIER,
    )  # fmt: skip
    ceiling = models.DecimalField(
        "multiplier ceiling", default=Decimal("2"), help_text="The multiplier when its capacity is all in use.",
        validators=[MinValueValidator(Decimal("0.01"))], **MULTIPLIER,
    )  # fmt: skip
    repriced_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "dynamic price"

    def __str__(self) -> str:
        return f"{self.model} x{self.floor}-{self.ceiling}"

    def clean(self):
        if self.floor is not None and self.ceiling is not None and self.floor > self.ceiling:
            raise ValidationError({"ceiling": "The ceiling must be at least the floor."})

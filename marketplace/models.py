"""The GPU host marketplace: hosts and their earnings ledger, payouts, customers' trust choice,
and the verification of community nodes' results.

Host earnings are a ledger of their own (:class:`EarningEntry`), apart from the customer balance
in ``billing``: what a host earned is owed to it in money, is pending for ``EARNINGS_HOLD_DAYS``,
can be held when its node is suspended, and leaves only as a payout, none of which a spendable
credit balance can express. Like billing's ledger it is append-only and idempotent per key.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

MONEY = {"max_digits": 18, "decimal_places": 8}


def default_revenue_share() -> Decimal:
    return Decimal(str(settings.HOST_REVENUE_SHARE))


class HostProfile(models.Model):
    """A user who joins machines to the fleet and earns from what they serve."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="host_profile")
    display_name = models.CharField(max_length=100)
    payout_details = models.TextField(blank=True, help_text="How the host wants to be paid (bank, PayPal, …).")
    revenue_share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=default_revenue_share,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="The share of each request's charge the host earns.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name"]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.user})"


class AccountPreference(models.Model):
    """A customer's account-wide choices: ``trusted_only`` keeps every key's requests on trusted nodes."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="marketplace_pref")
    trusted_only = models.BooleanField(
        "trusted nodes only", default=False, help_text="Never run this account's requests on community nodes."
    )

    def __str__(self) -> str:
        return f"{self.user}: {'trusted only' if self.trusted_only else 'any node'}"


class Payout(models.Model):
    """A host's request to be paid, and what staff did with it."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        APPROVED = "approved", "Approved"
        PAID = "paid", "Paid"
        REJECTED = "rejected", "Rejected"

    host = models.ForeignKey(HostProfile, on_delete=models.PROTECT, related_name="payouts")
    amount = models.DecimalField("amount (USD)", **MONEY)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED, db_index=True)
    payout_details = models.TextField(blank=True, help_text="The host's payout details when it asked.")
    reference = models.CharField(max_length=200, blank=True, help_text="The payment's reference, once paid.")
    note = models.CharField(max_length=500, blank=True)
    requested_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"Payout #{self.pk} {self.host} ${self.amount} {self.status}"


class EarningEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Earning entries are append-only: post a correcting entry instead.")

    def delete(self):
        raise TypeError("Earning entries are append-only: post a correcting entry instead.")


class EarningEntry(models.Model):
    """One movement in a host's earnings. ``amount`` is what it adds to what the host is owed:
    an earning adds; a payout request takes from what is available (its approval and payment move
    nothing, and are entries so that each step is on record); a rejection gives it back."""

    class Kind(models.TextChoices):
        EARNING = "earning", "Earning"
        PAYOUT_REQUESTED = "payout_requested", "Payout requested"
        PAYOUT_APPROVED = "payout_approved", "Payout approved"
        PAYOUT_PAID = "payout_paid", "Payout paid"
        PAYOUT_REJECTED = "payout_rejected", "Payout rejected (returned)"

    host = models.ForeignKey(HostProfile, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount = models.DecimalField("amount (USD)", **MONEY)
    idempotency_key = models.CharField(max_length=200, unique=True)
    # Earnings: the request, where and what it served; when it may be paid out.
    request_id = models.CharField(max_length=40, blank=True, db_index=True)
    node = models.ForeignKey(
        "deployments.WorkerNode", null=True, blank=True, on_delete=models.SET_NULL, related_name="earnings"
    )
    node_name = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    charge = models.DecimalField("the request's charge (USD) for this node's part", default=Decimal("0"), **MONEY)
    available_at = models.DateTimeField(null=True, blank=True)
    payout = models.ForeignKey(Payout, null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(db_index=True)

    objects = EarningEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "earning entries"
        indexes = [models.Index(fields=["host", "kind", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.idempotency_key})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Earning entries are append-only: post a correcting entry instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Earning entries are append-only: post a correcting entry instead.")


class NodeStanding(models.Model):
    """A community node's verification record: strikes, and its suspension."""

    node = models.OneToOneField("deployments.WorkerNode", on_delete=models.CASCADE, related_name="standing")
    checks = models.PositiveIntegerField(default=0)
    strikes = models.PositiveIntegerField(default=0)
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspension_reason = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"{self.node}: {self.strikes} strike(s){' suspended' if self.suspended_at else ''}"


class VerificationCheck(models.Model):
    """One sampled deterministic request of a community node, re-run on a trusted node."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        MATCH = "match", "Match"
        MISMATCH = "mismatch", "Mismatch (a strike)"
        ERROR = "error", "Could not check"

    request_id = models.CharField(max_length=40, unique=True)
    node = models.ForeignKey("deployments.WorkerNode", on_delete=models.CASCADE, related_name="verifications")
    model = models.CharField(max_length=200)
    request = models.JSONField(help_text="The request as the client sent it (what is re-run).")
    community_output = models.TextField()
    trusted_output = models.TextField(blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING, db_index=True)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.request_id} on {self.node}: {self.outcome}"

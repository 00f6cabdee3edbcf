from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """A user's API key. Only a short public prefix and a keyed hash of the whole key are stored."""

    class Scope(models.TextChoices):
        INFERENCE = "inference", "Inference (the OpenAI-compatible API)"
        MANAGEMENT = "management", "Management (usage and fleet APIs)"

    class BudgetPeriod(models.TextChoices):
        DAY = "day", "Per day (UTC)"
        MONTH = "month", "Per month (UTC)"
        TOTAL = "total", "In total"

    class Priority(models.IntegerChoices):
        LOW = 0, "Low (batch)"
        STANDARD = 1, "Standard"
        HIGH = 2, "High"

    # Upper bounds of the per-key limits, for every way a key is made or changed (form, REST, admin):
    # far above any real use, and inside the columns (and the admission Lua's numbers) that hold them.
    RPM_MAX = 100_000
    TPM_MAX = 1_000_000_000
    MAX_PARALLEL_MAX = 10_000

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    rpm = models.PositiveIntegerField(
        "requests per minute", default=60, validators=[MinValueValidator(1), MaxValueValidator(RPM_MAX)]
    )
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, default=Priority.STANDARD, help_text="Waiting requests of higher tiers run first."
    )
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model ids this key may use; empty allows every model."
    )
    # Money and token limits, enforced at admission (billing.admission).
    max_budget = models.DecimalField(
        "budget (USD)",
        max_digits=18,
        decimal_places=8,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Most this key may spend per budget period; empty for no budget.",
    )
    budget_period = models.CharField(max_length=10, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    budget_soft_percent = models.PositiveSmallIntegerField(
        "budget notice at (%)",
        default=80,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="The dashboard raises a notice when the key has spent this share of its budget.",
    )
    tpm = models.PositiveIntegerField(
        "tokens per minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(TPM_MAX)],
        help_text="Prompt plus max_tokens per minute; empty for no limit.",
    )
    max_parallel = models.PositiveIntegerField(
        "max requests in flight",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_PARALLEL_MAX)],
        help_text="Empty for no limit.",
    )
    # GPU host marketplace: this key's requests never run on community (hosts') nodes.
    trusted_only = models.BooleanField(
        "trusted nodes only", default=False, help_text="Never run this key's requests on community nodes."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    request_count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix}…)"

    @property
    def display_prefix(self) -> str:
        """What the user recognises the key by: the start of the key they were shown."""
        return f"gpc_{self.prefix}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.is_revoked and not self.is_expired

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def may_use(self, model_id: str) -> bool:
        return not self.allowed_models or model_id in self.allowed_models


class EmailVerification(models.Model):
    """A signed-up account whose email address is not verified yet: the row exists until the link
    in the verification email is followed. Until then the user is inactive (``is_active=False``),
    so they can neither log in nor use API keys. A user with no row was verified, or was made by
    staff (admin, ``createsuperuser``) and needs none; a staff-disabled user has no row either, so
    a verification link can never re-enable them."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="email_verification"
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"verification of {self.user}"

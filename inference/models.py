from decimal import Decimal

from django.conf import settings
from django.db import models


class UsageRecord(models.Model):
    """What one API request used. Exactly one per request: ``request_id`` is unique."""

    request_id = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_records")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="usage_records")
    endpoint = models.CharField(max_length=50)
    model = models.CharField(max_length=200, blank=True)
    deployment = models.CharField(max_length=100, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=50, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField("cost (USD)", max_digits=14, decimal_places=8, default=Decimal("0"))
    # The prices the request was charged at (billing.admission.settle); null for unbilled requests.
    price_version = models.ForeignKey(
        "billing.PriceVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="usage_records"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status_code}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from deployments.gpus import GPU_PROFILE_CHOICES


class Engine(models.TextChoices):
    SIMULATED = "simulated", "Simulated (paced like a GPU, deterministic)"


class CatalogModel(models.Model):
    """A model that can be deployed, with its size and price."""

    model_id = models.CharField(
        "model id",
        max_length=200,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", "Letters, digits and . _ : / - only.")],
        help_text="The name API clients pass as 'model'.",
    )
    family = models.CharField(max_length=50)
    parameters_billion = models.DecimalField(
        max_digits=7, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))]
    )
    context_length = models.PositiveIntegerField(default=8192)
    licence = models.CharField(max_length=100, blank=True)
    owned_by = models.CharField(max_length=100, default="gpucloud")
    price_input_per_million = models.DecimalField(
        "price per million input tokens (USD)", max_digits=10, decimal_places=4, default=Decimal("0")
    )
    price_output_per_million = models.DecimalField(
        "price per million output tokens (USD)", max_digits=10, decimal_places=4, default=Decimal("0")
    )
    default_engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.SIMULATED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_id"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.model_id

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (
            self.price_input_per_million * prompt_tokens + self.price_output_per_million * completion_tokens
        ) / Decimal(1_000_000)


class Deployment(models.Model):
    """A model served by GPU workers. Requests reach the workers through the deployment's queue."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"

    name = models.SlugField(max_length=100, unique=True, help_text="Also names the task queue: deployment.<name>.")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="deployments")
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.SIMULATED)
    gpu_profile = models.CharField(max_length=30, choices=GPU_PROFILE_CHOICES, default="A100-80GB")
    replicas = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue_name(self) -> str:
        return f"deployment.{self.name}"

"""Writes to the catalog and deployments."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from deployments.models import CatalogModel, Deployment, Engine, ModelAlias

# The demo catalog: enough to make a call the moment the platform is up.
DEMO_CATALOG = [
    {
        "model_id": "llama-3.1-8b-instruct",
        "family": "llama",
        "parameters_billion": Decimal("8.03"),
        "context_length": 131072,
        "licence": "llama3.1",
        "owned_by": "meta",
        "price_input_per_million": Decimal("0.10"),
        "price_output_per_million": Decimal("0.20"),
        "gpu_profile": "A100-80GB",
        "memory_gb": {"fp16": 17.5, "int8": 9.5, "int4": 5.5},
        "aliases": ["llama-3.1-8b"],
    },
    {
        "model_id": "mistral-7b-instruct-v0.3",
        "family": "mistral",
        "parameters_billion": Decimal("7.25"),
        "context_length": 32768,
        "licence": "apache-2.0",
        "owned_by": "mistralai",
        "price_input_per_million": Decimal("0.08"),
        "price_output_per_million": Decimal("0.15"),
        "gpu_profile": "RTX-4090-24GB",
        "memory_gb": {"fp16": 16.0, "int8": 8.5, "int4": 5.0},
        "aliases": ["mistral-7b"],
    },
    {
        "model_id": "qwen2.5-72b-instruct",
        "family": "qwen",
        "parameters_billion": Decimal("72.70"),
        "context_length": 32768,
        "licence": "qwen",
        "owned_by": "qwen",
        "price_input_per_million": Decimal("0.90"),
        "price_output_per_million": Decimal("0.90"),
        "gpu_profile": "H100-80GB",
        "memory_gb": {"fp16": 150.0, "int8": 78.0, "int4": 42.0},
        "aliases": ["qwen2.5-72b"],
    },
]


@transaction.atomic
def demo_catalog_ensure() -> list[Deployment]:
    """Create the demo models, each with a running simulated deployment, where missing."""
    deployments = []
    for entry in DEMO_CATALOG:
        fields = dict(entry)
        model_id = fields.pop("model_id")
        gpu_profile = fields.pop("gpu_profile")
        aliases = fields.pop("aliases")
        model, _ = CatalogModel.objects.get_or_create(model_id=model_id, defaults=fields)
        for alias in aliases:
            ModelAlias.objects.get_or_create(alias=alias, defaults={"model": model})
        deployment, _ = Deployment.objects.get_or_create(
            name=model_id.replace(".", "-").replace("/", "-"),
            defaults={"model": model, "engine": Engine.SIMULATED, "gpu_profile": gpu_profile},
        )
        deployments.append(deployment)
    return deployments

"""Writes to the catalog and deployments. Every change is followed by placement (see placement.py)."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from deployments import placement
from deployments.models import CatalogModel, Deployment, Engine, ModelAlias, Precision, Replica, Task

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
        "precision": Precision.INT4,
        "memory_gb": {"fp16": 150.0, "int8": 78.0, "int4": 42.0},
        "aliases": ["qwen2.5-72b"],
    },
]


def demo_catalog_ensure() -> list[Deployment]:
    """Create the demo models, each with a simulated deployment, where missing, and place them."""
    deployments = []
    with transaction.atomic():
        for entry in DEMO_CATALOG:
            fields = dict(entry)
            model_id = fields.pop("model_id")
            gpu_profile = fields.pop("gpu_profile")
            precision = fields.pop("precision", Precision.FP16)
            aliases = fields.pop("aliases")
            model, _ = CatalogModel.objects.get_or_create(model_id=model_id, defaults=fields)
            for alias in aliases:
                ModelAlias.objects.get_or_create(alias=alias, defaults={"model": model})
            deployment, _ = Deployment.objects.get_or_create(
                name=model_id.replace(".", "-").replace("/", "-"),
                defaults={
                    "model": model,
                    "engine": Engine.SIMULATED,
                    "gpu_profile": gpu_profile,
                    "precision": precision,
                },
            )
            deployments.append(deployment)
    placement.reconcile()
    return deployments


def demo_autoscale_ensure(deployments: list[Deployment], *, nodes: int) -> None:
    """Let the demo's deployments spread over the demo's ``nodes`` under load (autoscaling from one
    replica up to one per node), unless an operator set their bounds already. A fresh start has no
    load: autoscaled deployments start again from their minimum."""
    for deployment in deployments:
        deployment.refresh_from_db()
        changes: dict = {}
        unset = deployment.max_replicas is None
        if unset or (deployment.min_replicas in (None, 1) and deployment.max_replicas < nodes):
            changes.update(min_replicas=1, max_replicas=max(nodes, 1))
        low = changes.get("min_replicas", deployment.min_replicas) or 1
        if deployment.replicas != low:
            changes["replicas"] = low
        if changes:
            deployment_update(deployment=deployment, **changes)


EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def demo_embeddings_ensure() -> Deployment:
    """The real embedding model of the demo: all-MiniLM-L6-v2 on the hf engine (needs the ML extras
    on the node that serves it)."""
    with transaction.atomic():
        model, _ = CatalogModel.objects.get_or_create(
            model_id=EMBEDDING_MODEL,
            defaults={
                "family": "minilm",
                "parameters_billion": Decimal("0.02"),
                "context_length": 256,
                "licence": "apache-2.0",
                "owned_by": "sentence-transformers",
                "price_input_per_million": Decimal("0.01"),
                "default_engine": Engine.HF,
                "task": Task.EMBEDDING,
                "memory_gb": {"fp16": 0.3, "int8": 0.2, "int4": 0.1},
            },
        )
        deployment, _ = Deployment.objects.get_or_create(
            name="all-minilm-l6-v2",
            defaults={"model": model, "engine": Engine.HF, "engine_config": {"model": EMBEDDING_MODEL}},
        )
    placement.reconcile()
    return deployment


MAX_REPLICAS = 64
# Keys of engine_config that would hold a secret: the config is stored in the database and sent to
# nodes. A node reads its upstream's key from an environment variable named by "api_key_env".
SECRET_CONFIG_KEYS = ("api_key",)


def deployment_rules(deployment: Deployment) -> None:
    """The rules a deployment obeys beyond its model's field types, for every write path (the API,
    the dashboard's forms and the admin, which check them before saving too); raises a
    ValidationError by field."""
    errors: dict[str, list[str]] = {}
    config = deployment.engine_config
    if not isinstance(config, dict):
        errors["engine_config"] = ['engine_config must be a JSON object, e.g. {"model": "..."}; use {} for none.']
    else:
        for key in SECRET_CONFIG_KEYS:
            if key in config:
                errors["engine_config"] = [
                    f"Do not put '{key}' in engine_config: it would be stored and sent to nodes. Set "
                    f"'{key}_env' to the name of an environment variable on the node that holds it."
                ]
    if isinstance(deployment.replicas, int) and deployment.replicas > MAX_REPLICAS:
        errors["replicas"] = [f"At most {MAX_REPLICAS} replicas."]
    # Autoscaling bounds: 1 <= min_replicas <= max_replicas <= MAX_REPLICAS (min alone means nothing).
    low, high = deployment.min_replicas, deployment.max_replicas
    if low is not None and high is None:
        errors["max_replicas"] = ["Set max_replicas too: autoscaling moves the replicas between the two."]
    if isinstance(low, int) and low < 1:
        errors["min_replicas"] = ["At least 1: an autoscaled deployment keeps a replica to take requests."]
    if isinstance(high, int) and not 1 <= high <= MAX_REPLICAS:
        errors["max_replicas"] = [f"From 1 to {MAX_REPLICAS}."]
    if isinstance(low, int) and isinstance(high, int) and low > high:
        errors["max_replicas"] = ["At least min_replicas."]
    if errors:
        raise ValidationError(errors)


def _validate(deployment: Deployment) -> None:
    errors: dict[str, list[str]] = {}
    try:
        deployment.full_clean(exclude=["model"] if deployment.model_id else None)
    except ValidationError as error:
        errors = error.message_dict
    try:
        deployment_rules(deployment)
    except ValidationError as error:
        for field_name, messages in error.message_dict.items():
            errors.setdefault(field_name, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    if deployment.max_replicas is not None:
        # Autoscaled: the replica count stays within the bounds (an operator's figure is a start).
        low = deployment.min_replicas or 1
        deployment.replicas = min(max(deployment.replicas, low), deployment.max_replicas)


def deployment_create(
    *,
    name: str,
    model: CatalogModel,
    replicas: int = 1,
    engine: str | None = None,
    engine_config: dict | None = None,
    precision: str = Precision.FP16,
    gpu_profile: str = "",
    placement_strategy: str = Deployment.Placement.BINPACK,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> Deployment:
    """Create a deployment (pending) and place its replicas at once. With ``max_replicas`` it is
    autoscaled between ``min_replicas`` (default 1) and that (deployments.autoscale)."""
    deployment = Deployment(
        name=name,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        model=model,
        replicas=replicas,
        engine=engine or model.default_engine,
        engine_config={} if engine_config is None else engine_config,
        precision=precision,
        gpu_profile=gpu_profile,
        placement=placement_strategy,
    )
    _validate(deployment)
    deployment.save()
    placement.reconcile()
    deployment.refresh_from_db()
    return deployment


UPDATABLE = {"replicas", "engine_config", "precision", "gpu_profile", "placement", "min_replicas", "max_replicas"}


def deployment_update(*, deployment: Deployment, **changes) -> Deployment:
    """Scale or reconfigure a deployment. A change of engine settings or precision reloads its
    replicas (they are placed afresh), which also clears a failure."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "This field cannot be changed; create a new deployment."})
    reload = any(
        changes.get(f, getattr(deployment, f)) != getattr(deployment, f) for f in ("engine_config", "precision")
    )
    for field_name, value in changes.items():
        setattr(deployment, field_name, value)
    _validate(deployment)
    with transaction.atomic():
        deployment.save()
        if reload or deployment.status == Deployment.Status.FAILED:
            Replica.objects.filter(deployment=deployment).delete()
            Deployment.objects.filter(pk=deployment.pk).update(status=Deployment.Status.PENDING, status_reason="")
    placement.reconcile()
    deployment.refresh_from_db()
    return deployment


def deployment_stop(*, deployment: Deployment) -> Deployment:
    Deployment.objects.filter(pk=deployment.pk).update(status=Deployment.Status.STOPPING, status_reason="")
    placement.reconcile()
    deployment.refresh_from_db()
    return deployment


def deployment_start(*, deployment: Deployment) -> Deployment:
    Deployment.objects.filter(pk=deployment.pk).update(status=Deployment.Status.PENDING, status_reason="")
    placement.reconcile()
    deployment.refresh_from_db()
    return deployment


def deployment_delete(*, deployment: Deployment) -> None:
    """Delete a deployment; its replicas go with it, and nodes stop serving it at their next heartbeat."""
    deployment.delete()
    placement.reconcile()

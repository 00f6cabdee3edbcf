from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from nodeprotocol.gpus import GPU_PROFILE_CHOICES


class Engine(models.TextChoices):
    SIMULATED = "simulated", "Simulated (paced like a GPU, deterministic)"
    OPENAI = "openai", "OpenAI-compatible server on the node (vLLM, SGLang, TGI, llama.cpp, Ollama)"
    HF = "hf", "Hugging Face model in-process (CPU or CUDA)"


class Precision(models.TextChoices):
    FP16 = "fp16", "fp16 / bf16"
    INT8 = "int8", "int8"
    INT4 = "int4", "int4"


class Task(models.TextChoices):
    CHAT = "chat", "Chat and text completion"
    EMBEDDING = "embedding", "Embeddings"


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
    task = models.CharField(max_length=20, choices=Task.choices, default=Task.CHAT)
    memory_gb = models.JSONField(
        "memory need by precision (GB)",
        default=dict,
        blank=True,
        help_text='GPU memory for weights and a working KV cache, e.g. {"fp16": 17.5, "int8": 9.5, "int4": 5.5}.',
    )
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


class ModelAlias(models.Model):
    """Another name clients may use for a model (e.g. "llama3" for "llama-3.1-8b-instruct")."""

    alias = models.CharField(max_length=200, unique=True)
    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="aliases")

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.alias} → {self.model.model_id}"


class Deployment(models.Model):
    """A model served by replicas on GPU nodes. Requests reach them through the deployment's queue.

    Its status follows real events: placement (``scheduling`` until every replica has a node),
    nodes reporting replicas loaded (``starting`` → ``running``), an operator stopping it
    (``stopping`` → ``stopped``), or a replica failing to load (``failed``, with the reason).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SCHEDULING = "scheduling", "Scheduling"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    class Placement(models.TextChoices):
        BINPACK = "binpack", "Binpack (fill nodes before using new ones)"
        SPREAD = "spread", "Spread (use the emptiest nodes)"

    name = models.SlugField(max_length=100, unique=True, help_text="Also names the task queue: deployment.NAME.")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="deployments")
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.SIMULATED)
    engine_config = models.JSONField(
        default=dict,
        blank=True,
        help_text='Engine settings, e.g. for "openai": {"base_url": "http://127.0.0.1:8001/v1", "model": "..."}.',
    )
    precision = models.CharField(max_length=10, choices=Precision.choices, default=Precision.FP16)
    gpu_profile = models.CharField(
        "GPU type preference", max_length=30, choices=GPU_PROFILE_CHOICES, blank=True, default=""
    )
    placement = models.CharField(max_length=10, choices=Placement.choices, default=Placement.BINPACK)
    replicas = models.PositiveIntegerField(default=1)
    # Autoscaling (deployments.autoscale): on when max_replicas is set; replicas then moves between the two.
    min_replicas = models.PositiveIntegerField(null=True, blank=True, help_text="Autoscaling: never fewer.")
    max_replicas = models.PositiveIntegerField(
        null=True, blank=True, help_text="Autoscaling: at most this many (empty: a fixed number of replicas)."
    )
    # Since when nothing waits in its queue and its replicas are half idle (None: busy); the autoscaler's.
    quiet_since = models.DateTimeField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    status_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue_name(self) -> str:
        return f"deployment.{self.name}"

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas is not None

    @property
    def memory_gb(self) -> float | None:
        """GPU memory one replica needs at this precision, or None if the catalog does not say."""
        value = self.model.memory_gb.get(self.precision)
        return float(value) if value is not None else None


class Replica(models.Model):
    """One copy of a deployment, placed on a node's GPUs."""

    class State(models.TextChoices):
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        FAILED = "failed", "Failed"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="replica_set")
    node = models.ForeignKey("WorkerNode", on_delete=models.CASCADE, related_name="replicas")
    gpu_indices = models.JSONField(default=list)
    memory_gb = models.FloatField(default=0)
    state = models.CharField(max_length=20, choices=State.choices, default=State.STARTING)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment", "id"]

    def __str__(self) -> str:
        return f"{self.deployment.name} on {self.node.name}"


class Trust(models.TextChoices):
    """Whose machine a node is. ``trusted`` nodes are the operator's own; ``community`` nodes belong
    to hosts (any user), speak only the node protocol, and are paid, checked and avoidable by
    customers who ask for trusted capacity only."""

    TRUSTED = "trusted", "Trusted (the operator's)"
    COMMUNITY = "community", "Community (a host's)"


class JoinToken(models.Model):
    """Lets a GPU host join its machine to the fleet. Stored as a prefix and a keyed hash. The nodes
    it joins get its ``trust``: staff tokens make trusted nodes, hosts' tokens community nodes."""

    name = models.CharField(max_length=100)
    trust = models.CharField(max_length=10, choices=Trust.choices, default=Trust.TRUSTED)
    expires_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True, help_text="Empty for no limit.")
    uses = models.PositiveIntegerField(default=0, editable=False)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_token = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="join_tokens"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (gpcj_{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class WorkerNode(models.Model):
    """A GPU machine in the fleet, registered with a join token; it has a credential of its own."""

    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        DRAINING = "draining", "Draining"
        OFFLINE = "offline", "Offline"
        LEFT = "left", "Left the fleet"

    name = models.CharField(max_length=200)
    host = models.CharField(max_length=200, blank=True)
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.SIMULATED)
    slots = models.PositiveIntegerField(default=8, help_text="Requests the node runs at once.")
    gpus = models.JSONField(default=list, help_text="[{index, name, memory_total_mb}]")
    join_token = models.ForeignKey(JoinToken, null=True, on_delete=models.SET_NULL, related_name="nodes")
    trust = models.CharField(max_length=10, choices=Trust.choices, default=Trust.TRUSTED, db_index=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_nodes",
        help_text="The host whose machine this is (community nodes).",
    )
    credential_prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_credential = models.CharField(max_length=64, editable=False)
    credential_revoked_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OFFLINE, db_index=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    telemetry = models.JSONField(default=dict, blank=True, help_text="The last heartbeat's figures.")
    # Reliability (deployments.reliability): a score from 0 to 1, refreshed periodically from the
    # node's recent history; placement prefers high scores and gives none below RELIABILITY_MIN_SCORE.
    reliability = models.FloatField(default=1.0)
    reliability_detail = models.JSONField(default=dict, blank=True, editable=False)
    # Results of this node's found wrong when re-run on a trusted node (the verification's strikes).
    verification_strikes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_status(self) -> str:
        """The stored status, except that a node silent for too long is offline whatever it last said."""
        if self.status in (self.Status.ONLINE, self.Status.DRAINING):
            silent = self.last_heartbeat_at is None or (
                (timezone.now() - self.last_heartbeat_at).total_seconds() > settings.WORKER_OFFLINE_AFTER
            )
            if silent:
                return self.Status.OFFLINE
        return self.status


class NodeActivity(models.Model):
    """One node's history for one hour: seconds online and jobs served, lost and failed. Counted in
    Redis on the hot paths and added here in batches (deployments.reliability.flush)."""

    node = models.ForeignKey(WorkerNode, on_delete=models.CASCADE, related_name="activity")
    hour = models.DateTimeField(help_text="The hour's start (UTC).")
    online_seconds = models.FloatField(default=0)
    jobs_served = models.PositiveIntegerField(default=0)
    jobs_lost = models.PositiveIntegerField(default=0)
    jobs_failed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-hour", "node"]
        verbose_name_plural = "node activity"
        constraints = [models.UniqueConstraint(fields=["node", "hour"], name="node_activity_one_per_hour")]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.node} {self.hour:%Y-%m-%d %H}:00"

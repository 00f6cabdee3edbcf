from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count

from deployments import placement, services
from deployments.fleet import (
    JOIN_TOKEN_KIND,
    NODE_CREDENTIAL_KIND,
    join_token_revoke,
    node_credential_revoke,
)
from deployments.models import CatalogModel, Deployment, JoinToken, ModelAlias, Replica, WorkerNode


class ModelAliasInline(admin.TabularInline):
    model = ModelAlias
    extra = 1


class DeploymentAdminForm(forms.ModelForm):
    """Checks the service's rules (services.deployment_rules) with the model's, so that a refused
    value is an error on the form, not a failure when saving through the service."""

    def _post_clean(self):
        super()._post_clean()
        try:
            services.deployment_rules(self.instance)
        except ValidationError as error:
            self._update_errors(error)


class DeploymentInline(admin.TabularInline):
    """A model's deployments: scaled here through services.deployment_update; created on the
    Deployments page (services.deployment_create)."""

    model = Deployment
    form = DeploymentAdminForm
    extra = 0
    fields = ["name", "engine", "gpu_profile", "replicas", "status"]
    # The service refuses a new name or engine (that is a new deployment); placement sets the status.
    readonly_fields = ["name", "engine", "status"]
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = [
        "model_id",
        "family",
        "parameters_billion",
        "context_length",
        "price_input_per_million",
        "price_output_per_million",
        "default_engine",
        "task",
    ]
    list_filter = ["family", "default_engine", "task"]
    search_fields = ["model_id", "family", "aliases__alias"]
    inlines = [ModelAliasInline, DeploymentInline]

    def save_formset(self, request, form, formset, change):
        if formset.model is not Deployment:
            return super().save_formset(request, form, formset, change)
        # The deployments inline saves through the service, like every other write of a deployment.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline_form in formset.initial_forms:
            if inline_form in formset.deleted_forms:
                services.deployment_delete(deployment=inline_form.instance)
                formset.deleted_objects.append(inline_form.instance)
                continue
            changes = {n: inline_form.cleaned_data[n] for n in inline_form.changed_data if n in services.UPDATABLE}
            if changes:
                deployment = Deployment.objects.get(pk=inline_form.instance.pk)
                services.deployment_update(deployment=deployment, **changes)
                formset.changed_objects.append((inline_form.instance, list(changes)))

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        placement.reconcile()  # a new memory need


class ReplicaInline(admin.TabularInline):
    """A deployment's replicas, as placement left them: read-only."""

    model = Replica
    extra = 0
    fields = ["node", "gpus", "memory_gb", "state", "reason", "created_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="GPUs")
    def gpus(self, obj: Replica) -> str:
        return _gpus(obj)


def _gpus(replica: Replica) -> str:
    # No GPU indices: a CPU node, or an "openai" replica whose upstream server owns its memory.
    return ", ".join(str(i) for i in replica.gpu_indices) if replica.gpu_indices else "none"


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    """Saving and deleting go through placement, as on the Deployments page and the API."""

    list_display = [
        "name", "model", "engine", "gpu_profile", "replicas", "min_replicas", "max_replicas", "status", "status_reason",
        "created_at",
    ]  # fmt: skip
    list_filter = ["status", "engine", "gpu_profile"]
    list_select_related = ["model"]
    search_fields = ["name", "model__model_id"]
    fields = [
        "name",
        "model",
        "engine",
        "status",
        "status_reason",
        "replicas",
        "min_replicas",
        "max_replicas",
        "precision",
        "gpu_profile",
        "placement",
        "engine_config",
    ]
    # Placement writes the status; operators stop and start deployments with the actions.
    readonly_fields = ["status", "status_reason"]
    form = DeploymentAdminForm
    inlines = [ReplicaInline]
    actions = ["stop", "start"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            # services.deployment_update refuses these: a different model or engine is a new deployment.
            return [*self.readonly_fields, "name", "model", "engine"]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:
            created = services.deployment_create(
                name=obj.name,
                model=obj.model,
                replicas=obj.replicas,
                engine=obj.engine,
                engine_config=obj.engine_config,
                precision=obj.precision,
                gpu_profile=obj.gpu_profile,
                placement_strategy=obj.placement,
                min_replicas=obj.min_replicas,
                max_replicas=obj.max_replicas,
            )
            obj.pk = created.pk  # the admin redirects to the new row's page
            obj.refresh_from_db()
            return
        # Through the service, which also reloads the replicas when the precision or engine settings change.
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in services.UPDATABLE}
        services.deployment_update(deployment=Deployment.objects.get(pk=obj.pk), **changes)

    def delete_model(self, request, obj):
        services.deployment_delete(deployment=obj)

    def delete_queryset(self, request, queryset):
        for deployment in queryset:
            services.deployment_delete(deployment=deployment)

    @admin.action(description="Stop selected deployments", permissions=["change"])
    def stop(self, request, queryset):
        deployments = list(queryset.exclude(status=Deployment.Status.STOPPED))
        for deployment in deployments:
            services.deployment_stop(deployment=deployment)
        self.message_user(request, f"Stopped {len(deployments)} deployment(s).", messages.SUCCESS)

    @admin.action(description="Start selected stopped deployments", permissions=["change"])
    def start(self, request, queryset):
        deployments = list(queryset.filter(status=Deployment.Status.STOPPED))
        for deployment in deployments:
            services.deployment_start(deployment=deployment)
        self.message_user(request, f"Started {len(deployments)} deployment(s).", messages.SUCCESS)


@admin.register(Replica)
class ReplicaAdmin(admin.ModelAdmin):
    """Replicas are placed by deployments.placement: this list only shows where they are.
    Deleting one makes placement put it back at once (possibly elsewhere)."""

    list_display = ["deployment", "node", "gpus", "memory_gb", "state", "reason", "created_at"]
    list_filter = ["state", "deployment"]
    list_select_related = ["deployment", "node"]
    search_fields = ["deployment__name", "node__name", "reason"]
    fields = ["deployment", "node", "gpus", "memory_gb", "state", "reason", "created_at"]
    readonly_fields = fields

    @admin.display(description="GPUs")
    def gpus(self, obj: Replica) -> str:
        return _gpus(obj)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    # Deleting stays allowed: the admin checks it when a deployment or node is deleted with its replicas.
    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        placement.reconcile()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        placement.reconcile()


class WorkerNodeInline(admin.TabularInline):
    model = WorkerNode
    extra = 0
    fields = ["name", "host", "status", "registered_at", "credential_revoked_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(JoinToken)
class JoinTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "display_prefix", "created_by", "created_at", "node_count", "state"]
    list_filter = ["revoked_at", "created_at"]
    search_fields = ["name", "prefix", "created_by__username"]
    # The hash is never shown: it is not the token and is of no use to an operator.
    fields = ["name", "display_prefix", "created_by", "created_at", "revoked_at"]
    readonly_fields = ["display_prefix", "created_by", "created_at", "revoked_at"]
    inlines = [WorkerNodeInline]
    actions = ["revoke"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by").annotate(node_count=Count("nodes"))

    @admin.display(description="token")
    def display_prefix(self, obj: JoinToken) -> str:
        return f"{JOIN_TOKEN_KIND}_{obj.prefix}…"

    @admin.display(description="nodes joined", ordering="node_count")
    def node_count(self, obj: JoinToken) -> int:
        return obj.node_count

    @admin.display(description="state")
    def state(self, obj: JoinToken) -> str:
        return "active" if obj.is_active else "revoked"

    def has_add_permission(self, request) -> bool:
        # Tokens are created on the Fleet page or with manage.py createjointoken, where the token is shown once.
        return False

    @admin.action(description="Revoke selected join tokens", permissions=["change"])
    def revoke(self, request, queryset):
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            join_token_revoke(token=token)
        self.message_user(request, f"Revoked {len(tokens)} join token(s).", messages.SUCCESS)


@admin.register(WorkerNode)
class WorkerNodeAdmin(admin.ModelAdmin):
    list_display = [
        "name", "host", "effective_status", "slots", "reliability", "joined_with", "last_heartbeat_at", "credential",
    ]  # fmt: skip
    list_filter = ["status", "engine", "credential_revoked_at"]
    search_fields = ["name", "host", "credential_prefix"]
    # Nodes are written by the fleet (registration, heartbeats), so the page is read-only: an operator
    # revokes a node's credential with the action, or deletes a node that left. The hash is never shown.
    fields = [
        "name",
        "host",
        "effective_status",
        "engine",
        "slots",
        "gpus",
        "join_token",
        "display_credential",
        "credential_revoked_at",
        "registered_at",
        "last_heartbeat_at",
        "telemetry",
        "reliability",
        "reliability_detail",
        "verification_strikes",
    ]
    readonly_fields = fields
    actions = ["revoke_credential"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("join_token")

    @admin.display(description="status")
    def effective_status(self, obj: WorkerNode) -> str:
        return WorkerNode.Status(obj.effective_status).label

    @admin.display(description="credential")
    def display_credential(self, obj: WorkerNode) -> str:
        return f"{NODE_CREDENTIAL_KIND}_{obj.credential_prefix}…"

    @admin.display(description="joined with", ordering="join_token__name")
    def joined_with(self, obj: WorkerNode) -> str:
        return obj.join_token.name if obj.join_token else "-"

    @admin.display(description="credential")
    def credential(self, obj: WorkerNode) -> str:
        return "revoked" if obj.credential_revoked_at else "active"

    def has_add_permission(self, request) -> bool:
        # Nodes join with a join token (manage.py gpuworker), which gives them their credential.
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Revoke credential of selected nodes", permissions=["revoke"])
    def revoke_credential(self, request, queryset):
        nodes = list(queryset.filter(credential_revoked_at__isnull=True))
        for node in nodes:
            node_credential_revoke(node=node)
        self.message_user(
            request,
            f"Revoked the credential of {len(nodes)} node(s). They are refused at their next heartbeat.",
            messages.SUCCESS,
        )

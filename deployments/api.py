"""Fleet API: node registration (join token), and monitoring for the management scope."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import ManagementAPIView
from accounts.drf import HasManagementScope
from deployments.fleet import ProtocolMismatch, Refused, node_register
from deployments.models import CatalogModel, Deployment, Engine, Precision, Replica
from deployments.placement import replica_memory_gb
from deployments.selectors import node_summary, queue_depths, visible_nodes
from deployments.services import (
    deployment_create,
    deployment_delete,
    deployment_start,
    deployment_stop,
    deployment_update,
)
from gpucloud.openai_errors import ApiError
from nodeprotocol import VERSION as PROTOCOL_VERSION
from nodeprotocol.gpus import GPU_PROFILE_CHOICES


class GpuSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0, max_value=1024)
    name = serializers.CharField(max_length=100)
    memory_total_mb = serializers.IntegerField(min_value=0, max_value=64 * 1024 * 1024)  # 64 TiB


class RegisterSerializer(serializers.Serializer):
    token = serializers.CharField()
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    host = serializers.CharField(max_length=200, allow_blank=True, default="")
    engine = serializers.ChoiceField(choices=Engine.choices, default=Engine.SIMULATED)
    slots = serializers.IntegerField(min_value=1, max_value=1024, default=8)
    gpus = GpuSerializer(many=True, default=list)
    # The node protocol version the node speaks (nodeprotocol.VERSION); checked by node_register.
    protocol = serializers.IntegerField(required=False, default=None, allow_null=True, min_value=0, max_value=1000)


class RegisterView(APIView):
    """``POST /api/workers/register``: a node joins with a join token and gets its own credential."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            node, credential = node_register(**serializer.validated_data)
        except ProtocolMismatch as mismatch:
            raise ApiError(str(mismatch), status=400, param="protocol", code="protocol_version") from None
        except Refused as refusal:
            raise ApiError(str(refusal), status=401, code="invalid_join_token") from None
        # The node's own credential and where to open its socket: nothing of Redis, the database,
        # Celery or the Channels layer ever leaves the server side.
        return Response(
            {
                "node": node.name,
                "credential": credential,
                "websocket_path": "/ws/workers/",
                "heartbeat_interval": settings.WORKER_HEARTBEAT_INTERVAL,
                "protocol": PROTOCOL_VERSION,
            },
            status=status.HTTP_201_CREATED,
        )


class IsOperator(BasePermission):
    """The fleet and its deployments are the operators' (staff users') business."""

    def has_permission(self, request, view):
        if not request.user.is_staff:
            raise ApiError(
                "The fleet and its deployments need a management key of an operator (staff) account.",
                status=403,
                type="permission_error",
                code="not_an_operator",
            )
        return True


class WorkersView(ManagementAPIView):
    """``GET /api/workers``: nodes, their status, GPUs and requests in flight (operators only)."""

    permission_classes = [HasManagementScope, IsOperator]

    def get(self, request):
        return Response({"object": "list", "data": [node_summary(n) for n in visible_nodes(request.user)]})


class QueuesView(ManagementAPIView):
    """``GET /api/queues``: requests waiting per running deployment (operators only: it names every
    deployment and how busy it is)."""

    permission_classes = [HasManagementScope, IsOperator]

    def get(self, request):
        return Response({"object": "list", "data": queue_depths()})


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="model_id", queryset=CatalogModel.objects.all())
    # Bounded here by type (a huge number would overflow the column); the service checks the rules.
    min_replicas = serializers.IntegerField(min_value=1, max_value=1024, required=False, allow_null=True)
    max_replicas = serializers.IntegerField(min_value=1, max_value=1024, required=False, allow_null=True)
    queue = serializers.CharField(source="queue_name", read_only=True)
    replicas_running = serializers.SerializerMethodField()
    memory_gb_per_replica = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = [
            "name", "model", "engine", "engine_config", "precision", "gpu_profile", "placement", "replicas",
            "min_replicas", "max_replicas", "replicas_running", "memory_gb_per_replica", "status", "status_reason",
            "queue", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["status", "status_reason", "created_at", "updated_at"]

    def get_replicas_running(self, deployment: Deployment) -> int:
        return sum(1 for r in deployment.replica_set.all() if r.state == Replica.State.RUNNING)

    def get_memory_gb_per_replica(self, deployment: Deployment) -> float:
        return replica_memory_gb(deployment)


class DeploymentUpdateSerializer(serializers.Serializer):
    # Types only: the rules (replica cap, engine_config an object without secrets) are the service's.
    replicas = serializers.IntegerField(min_value=0, required=False)
    min_replicas = serializers.IntegerField(min_value=1, max_value=1024, required=False, allow_null=True)
    max_replicas = serializers.IntegerField(min_value=1, max_value=1024, required=False, allow_null=True)
    engine_config = serializers.JSONField(required=False)
    precision = serializers.ChoiceField(choices=Precision.choices, required=False)
    gpu_profile = serializers.ChoiceField(choices=[("", "any"), *GPU_PROFILE_CHOICES], required=False)
    placement = serializers.ChoiceField(choices=Deployment.Placement.choices, required=False)
    status = serializers.ChoiceField(choices=["running", "stopped"], required=False)


def _deployments():
    return Deployment.objects.select_related("model").prefetch_related("replica_set")


class DeploymentsView(ManagementAPIView):
    """``GET /api/deployments`` lists them; ``POST`` creates one and places its replicas."""

    permission_classes = [HasManagementScope, IsOperator]

    def get(self, request):
        return Response({"object": "list", "data": DeploymentSerializer(_deployments(), many=True).data})

    def post(self, request):
        serializer = DeploymentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            deployment = deployment_create(
                name=data.pop("name"),
                model=data.pop("model"),
                placement_strategy=data.pop("placement", "binpack"),
                **data,
            )
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        return Response(DeploymentSerializer(_deployments().get(pk=deployment.pk)).data, status=status.HTTP_201_CREATED)


class DeploymentDetailView(ManagementAPIView):
    """``GET``, ``PATCH`` (scale, reconfigure, ``status`` stopped/running) and ``DELETE``."""

    permission_classes = [HasManagementScope, IsOperator]

    def get_object(self, name: str) -> Deployment:
        deployment = _deployments().filter(name=name).first()
        if deployment is None:
            raise ApiError(f"No deployment named '{name}'.", status=404, code="deployment_not_found")
        return deployment

    def get(self, request, name):
        return Response(DeploymentSerializer(self.get_object(name)).data)

    def patch(self, request, name):
        deployment = self.get_object(name)
        serializer = DeploymentUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        wanted_status = changes.pop("status", None)
        try:
            if changes:
                deployment = deployment_update(deployment=deployment, **changes)
            if wanted_status == "stopped":
                deployment = deployment_stop(deployment=deployment)
            elif wanted_status == "running" and deployment.status == Deployment.Status.STOPPED:
                deployment = deployment_start(deployment=deployment)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        return Response(DeploymentSerializer(_deployments().get(pk=deployment.pk)).data)

    def delete(self, request, name):
        deployment_delete(deployment=self.get_object(name))
        return Response(status=status.HTTP_204_NO_CONTENT)

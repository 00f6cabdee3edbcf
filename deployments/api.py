"""Fleet API: node registration (join token), and monitoring for the management scope."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import ManagementAPIView
from deployments.fleet import Refused, node_register
from deployments.models import Engine
from deployments.selectors import node_summary, queue_depths, visible_nodes
from gpucloud.openai_errors import ApiError


class GpuSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0)
    name = serializers.CharField(max_length=100)
    memory_total_mb = serializers.IntegerField(min_value=0)


class RegisterSerializer(serializers.Serializer):
    token = serializers.CharField()
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    host = serializers.CharField(max_length=200, allow_blank=True, default="")
    engine = serializers.ChoiceField(choices=Engine.choices, default=Engine.SIMULATED)
    slots = serializers.IntegerField(min_value=1, max_value=1024, default=8)
    gpus = GpuSerializer(many=True, default=list)


class RegisterView(APIView):
    """``POST /api/workers/register``: a node joins with a join token and gets its own credential."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            node, credential = node_register(**serializer.validated_data)
        except Refused as refusal:
            raise ApiError(str(refusal), status=401, code="invalid_join_token") from None
        return Response(
            {
                "node": node.name,
                "credential": credential,
                "redis_url": settings.WORKER_REDIS_URL,
                "websocket_path": "/ws/workers/",
                "heartbeat_interval": settings.WORKER_HEARTBEAT_INTERVAL,
            },
            status=status.HTTP_201_CREATED,
        )


class WorkersView(ManagementAPIView):
    """``GET /api/workers``: nodes, their status, GPUs and requests in flight."""

    def get(self, request):
        return Response({"object": "list", "data": [node_summary(n) for n in visible_nodes(request.user)]})


class QueuesView(ManagementAPIView):
    """``GET /api/queues``: requests waiting per running deployment."""

    def get(self, request):
        return Response({"object": "list", "data": queue_depths()})

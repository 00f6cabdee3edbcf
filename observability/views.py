"""``GET /metrics``: the platform's Prometheus metrics, for a scraper with ``METRICS_TOKEN`` or staff."""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from gpucloud.openai_errors import ApiError, api_error_response
from observability.collector import FleetCollector
from observability.metrics import AggregatedCollector

logger = logging.getLogger(__name__)


def _refusal(request) -> ApiError | None:
    """Why this request may not read the metrics, or None when it may."""
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        expected = settings.METRICS_TOKEN
        if scheme.lower() == "bearer" and expected and hmac.compare_digest(token.strip().encode(), expected.encode()):
            return None
        error = ApiError("Incorrect metrics token.", status=401, code="invalid_metrics_token")
        error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return error
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return None
    if user.is_authenticated:
        return ApiError("Only staff may read the metrics.", status=403, type="permission_error", code="staff_only")
    error = ApiError(
        "Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>', or log in as staff.",
        status=401,
        code="missing_metrics_token",
    )
    error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return error


@require_GET
def metrics(request):
    refusal = _refusal(request)
    if refusal is not None:
        return api_error_response(refusal)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AggregatedCollector())
    registry.register(FleetCollector())
    try:
        body = generate_latest(registry)
    except RedisError as error:
        logger.warning("Metrics: Redis unavailable: %s", error)
        return api_error_response(
            ApiError("Metrics are briefly unavailable (Redis).", status=503, type="server_error", code="redis_down")
        )
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)

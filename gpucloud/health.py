"""``GET /health``: liveness (database, Redis, at least one GPU node) and, apart, per-model readiness.

The status code answers "is the platform up?": 200 when the database, Redis and at least one GPU
node are, else 503. ``models`` answers "can model X be served right now?" for every deployed
model, without changing the status: a model still loading does not make the platform unhealthy.
"""

from django.db import connection
from django.http import JsonResponse

from deployments.presence import live_workers
from deployments.selectors import model_readiness
from gpucloud.redis_client import get_redis


def health(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as error:
        checks["database"] = {"ok": False, "error": type(error).__name__}
    try:
        get_redis().ping()
        checks["redis"] = {"ok": True}
    except Exception as error:
        checks["redis"] = {"ok": False, "error": type(error).__name__}
    try:
        workers = live_workers() if checks["redis"]["ok"] else []
        checks["workers"] = {"ok": bool(workers), "count": len(workers), "names": workers}
    except Exception as error:
        checks["workers"] = {"ok": False, "count": 0, "error": type(error).__name__}
    try:
        models = model_readiness() if checks["database"]["ok"] else {}
    except Exception:
        models = {}
    live = all(check["ok"] for check in checks.values())
    body = {"status": "ok" if live else "unavailable", "checks": checks, "models": models}
    return JsonResponse(body, status=200 if live else 503)

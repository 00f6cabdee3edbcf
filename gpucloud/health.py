"""``GET /health``: 200 when the database, Redis and at least one GPU worker are up, else 503."""

from django.db import connection
from django.http import JsonResponse

from deployments.presence import live_workers
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
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)

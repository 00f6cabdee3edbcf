"""Error pages: OpenAI-shaped JSON under the API paths, the dashboard's styled pages elsewhere."""

import sys

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.db import DatabaseError
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from gpucloud.jsonbody import too_large
from gpucloud.openai_errors import ApiError, api_error_response

API_PREFIXES = ("/v1/", "/api/")


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIXES)


# API clients send no CSRF token: an unknown URL is a 404 whatever the method.
@csrf_exempt
def api_not_found(request, *args):
    return api_error_response(
        ApiError(f"Unknown request URL: {request.method} {request.path}.", status=404, code="unknown_url")
    )


def bad_request(request, exception=None):
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            return api_error_response(too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
        if isinstance(exception, DisallowedHost):
            return api_error_response(ApiError("Invalid Host header.", code="invalid_host"))
        return api_error_response(ApiError("The request could not be read.", code="bad_request"))
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return api_error_response(
            ApiError("You do not have permission to do this.", status=403, type="permission_error")
        )
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    if _is_api(request):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """500, except when a dependency was out (the database or Redis): 503, which clients retry."""
    outage = isinstance(sys.exc_info()[1], DatabaseError | RedisError)
    if _is_api(request):
        if outage:
            error = ApiError(
                "The platform is briefly unavailable (a database or queue connection failed). Retry shortly.",
                status=503,
                type="server_error",
                code="platform_unavailable",
                headers={"Retry-After": "5"},
            )
        else:
            error = ApiError("The server had an error while processing your request.", status=500, type="server_error")
        return api_error_response(error)
    response = defaults.server_error(request)
    if outage:
        response.status_code = 503
        response["Retry-After"] = "5"
    return response


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: JSON under the API paths (whose views are CSRF-exempt anyway)."""
    if _is_api(request):
        return api_error_response(
            ApiError(f"CSRF verification failed: {reason}", status=403, type="permission_error", code="csrf_failed")
        )
    return csrf.csrf_failure(request, reason=reason)

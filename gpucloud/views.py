"""Error pages: OpenAI-shaped JSON under the API paths, HTML elsewhere."""

from django.views import defaults

from gpucloud.openai_errors import ApiError, api_error_response

API_PREFIXES = ("/v1/", "/api/")


def api_not_found(request, *args):
    return api_error_response(
        ApiError(f"Unknown request URL: {request.method} {request.path}.", status=404, code="unknown_url")
    )


def not_found(request, exception=None):
    if request.path.startswith(API_PREFIXES):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith(API_PREFIXES):
        return api_error_response(
            ApiError("The server had an error while processing your request.", status=500, type="server_error")
        )
    return defaults.server_error(request)

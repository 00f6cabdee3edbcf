"""Request-wide middleware."""

import secrets

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import DisallowedHost

from gpucloud.openai_errors import ApiError, api_error_response, invalid_request

API_PREFIXES = ("/v1/", "/api/")


def new_request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


class RequestIdMiddleware:
    """Give every request an id (``request.request_id``) and echo it as ``x-request-id``.

    The id keys the request's usage record and its task, so one request is metered once.
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        request.request_id = new_request_id()
        response = self.get_response(request)
        response["x-request-id"] = request.request_id
        return response

    async def _acall(self, request):
        request.request_id = new_request_id()
        response = await self.get_response(request)
        response["x-request-id"] = request.request_id
        return response


def api_request_problem(request) -> ApiError | None:
    """What is wrong with an API request before any view sees it, or None.

    A wrong Host header and NUL characters in the query string (PostgreSQL text cannot hold them)
    are answered in the OpenAI shape here, so no Django default page answers them as HTML or a 500.
    (Bodies that are not JSON get their 415 from the views: ``api_key_required`` and DRF's parser.)
    """
    try:
        request.get_host()
    except DisallowedHost:
        return ApiError("Invalid Host header: this server does not answer for that host name.", code="invalid_host")
    for name, values in request.GET.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            return invalid_request("Query parameters must not contain NUL characters.", param=name.replace("\x00", ""))
    return None


class ApiRequestGuardMiddleware:
    """Refuse malformed requests under ``/v1/`` and ``/api/`` with an OpenAI-shaped 4xx.

    Placed before SecurityMiddleware and CommonMiddleware, which would raise DisallowedHost (an
    HTML 400, or a debug page with DEBUG on) for a wrong Host header.
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        if request.path.startswith(API_PREFIXES) and (problem := api_request_problem(request)):
            return api_error_response(problem)
        return self.get_response(request)

    async def _acall(self, request):
        if request.path.startswith(API_PREFIXES) and (problem := api_request_problem(request)):
            return api_error_response(problem)
        return await self.get_response(request)

"""Request-wide middleware."""

import secrets

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


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

"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``.

Views raise :class:`ApiError`; :func:`api_error_response` renders it. Every error a client can
cause goes through here so that the OpenAI SDK raises the matching exception class.
"""

from __future__ import annotations

from django.http import JsonResponse
from rest_framework import exceptions as drf_exceptions


class ApiError(Exception):
    """An error to send to an API client, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def as_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(message, status=400, param=param, code=code)


def invalid_api_key(message: str = "Incorrect API key provided.") -> ApiError:
    return ApiError(message, status=401, code="invalid_api_key")


def insufficient_scope(scope: str) -> ApiError:
    return ApiError(
        f"This API key lacks the '{scope}' scope required here. Create a key with that scope in the dashboard.",
        status=403,
        type="permission_error",
        code="insufficient_scope",
    )


def model_not_found(model: str) -> ApiError:
    return ApiError(
        f"The model '{model}' does not exist or you do not have access to it.",
        status=404,
        param="model",
        code="model_not_found",
    )


def service_unavailable(message: str, code: str = "service_unavailable") -> ApiError:
    return ApiError(message, status=503, type="server_error", code=code)


def api_error_response(error: ApiError) -> JsonResponse:
    response = JsonResponse(error.as_dict(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def drf_exception_handler(exc, context):
    """Render DRF's exceptions (authentication, permission, validation, 404) in the OpenAI shape."""
    if isinstance(exc, ApiError):
        return api_error_response(exc)
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        return api_error_response(invalid_api_key(str(exc.detail)))
    if isinstance(exc, drf_exceptions.ValidationError):
        param, message = _first_validation_error(exc.detail)
        return api_error_response(invalid_request(message, param=param))
    if isinstance(exc, drf_exceptions.APIException):
        status = exc.status_code
        kind = "permission_error" if status == 403 else "invalid_request_error"
        code = exc.default_code if isinstance(exc.default_code, str) else None
        return api_error_response(ApiError(str(exc.detail), status=status, type=kind, code=code))
    from django.http import Http404

    if isinstance(exc, Http404):
        return api_error_response(ApiError("Not found.", status=404, code="not_found"))
    return None


def _first_validation_error(detail) -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for field, errors in detail.items():
            _, message = _first_validation_error(errors)
            return (None if field == "non_field_errors" else str(field)), message
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0])
    return None, str(detail)

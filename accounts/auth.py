"""The one entry point for API-key authentication and per-key rate limits.

``authenticate_request`` reads ``Authorization: Bearer <key>``, checks the key's state and scope,
and counts the request against the key's requests-per-minute limit over a sliding minute in Redis
(:mod:`accounts.ratelimit`). Async API views use the :func:`api_key_required` decorator; the DRF API uses
:class:`accounts.drf.ApiKeyAuthentication`. No view parses a key itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts import ratelimit
from accounts.models import ApiKey
from accounts.services import api_key_lookup, api_key_record_use
from gpucloud.jsonbody import is_json_content_type, unsupported_media_type
from gpucloud.openai_errors import ApiError, api_error_response, insufficient_scope, invalid_api_key

BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.reset_seconds}s",
        }

    def apply(self, response: HttpResponse) -> HttpResponse:
        for name, value in self.headers().items():
            response[name] = value
        return response


def _mask(raw_key: str) -> str:
    return f"{raw_key[:8]}****{raw_key[-4:]}" if len(raw_key) > 16 else "****"


def check_rate_limit(request: HttpRequest, api_key: ApiKey) -> RateLimitState:
    """Count this request against the key's RPM over a sliding minute; raises a 429 ApiError when
    over the limit."""
    if not settings.RATELIMIT_ENABLE:
        return RateLimitState(limit=api_key.rpm, remaining=api_key.rpm, reset_seconds=0)
    # The prefix, not the row id: ids restart in a new database, prefixes are random.
    usage = ratelimit.hit(f"api-key:{api_key.prefix}", limit=api_key.rpm, window_seconds=60)
    reset = usage.reset_seconds
    state = RateLimitState(limit=api_key.rpm, remaining=usage.remaining, reset_seconds=reset)
    if not usage.allowed:
        raise ApiError(
            f"Rate limit reached for this API key: {api_key.rpm} requests per minute. "
            f"Try again in {reset}s, or raise the key's limit in the dashboard.",
            status=429,
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(reset), **state.headers()},
        )
    return state


def authenticate_request(request: HttpRequest, scope: str | None) -> tuple[ApiKey, RateLimitState]:
    """Authenticate the request's bearer key, check ``scope``, and apply the key's rate limit."""
    scheme, _, raw_key = request.headers.get("Authorization", "").partition(" ")
    raw_key = raw_key.strip()
    if scheme.lower() != "bearer" or not raw_key:
        raise invalid_api_key(
            "You didn't provide an API key. Send it in the header 'Authorization: Bearer <key>'; "
            "create keys in the dashboard."
        )
    api_key = api_key_lookup(raw_key)
    if api_key is None:
        raise invalid_api_key(
            f"Incorrect API key provided: {_mask(raw_key)}. You can find your API keys in the dashboard."
        )
    return admit_key(request, api_key, scope)


def admit_key(request: HttpRequest, api_key: ApiKey, scope: str | None) -> tuple[ApiKey, RateLimitState]:
    """Check a known key's state and ``scope``, and apply its rate limit: what every request made
    with a key goes through, whether the key came in a header or from the session (the playground)."""
    if api_key.is_revoked:
        raise invalid_api_key("This API key has been revoked. Create a new key in the dashboard.")
    if api_key.is_expired:
        raise invalid_api_key(
            f"This API key expired at {api_key.expires_at.isoformat()}. Create a new key in the dashboard."
        )
    if not api_key.user.is_active:
        raise invalid_api_key("The account that owns this API key is disabled.")
    if scope is not None and not api_key.has_scope(scope):
        raise insufficient_scope(scope)
    state = check_rate_limit(request, api_key)
    api_key_record_use(api_key)
    return api_key, state


def api_key_required(scope: str, methods: tuple[str, ...] = ("GET",)):
    """Decorate an async API view: check the method and that a body is JSON (415 otherwise),
    authenticate, rate-limit, and render ApiErrors in the OpenAI shape.

    The view finds the key in ``request.api_key``; every response carries the rate-limit headers.
    """

    def decorator(view):
        # Clients authenticate with a bearer key, never a cookie: CSRF protection does not apply.
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = api_error_response(
                    ApiError(f"Method {request.method} is not allowed here; use {', '.join(methods)}.", status=405)
                )
                response["Allow"] = ", ".join(methods)
                return response
            content_type = request.META.get("CONTENT_TYPE", "")
            if request.method in BODY_METHODS and not is_json_content_type(content_type):
                return api_error_response(unsupported_media_type(content_type))
            try:
                request.api_key, state = await sync_to_async(authenticate_request)(request, scope)
            except ApiError as error:
                return api_error_response(error)
            try:
                response = await view(request, *args, **kwargs)
            except ApiError as error:
                response = api_error_response(error)
            return state.apply(response)

        return wrapper

    return decorator


# --- The playground: the session's user, through one key of theirs --------------------------------


def session_key_required(key_for_user, scope: str, methods: tuple[str, ...] = ("POST",)):
    """Decorate an async view that runs an API view for the logged-in user of the session, with
    the key ``key_for_user(user)`` gives (the playground's). Unlike :func:`api_key_required`, CSRF
    protection applies (a cookie authenticates); from the key on, everything is the same: its
    state, scope and rate limit (:func:`admit_key`), then the API view itself, which admits, meters
    and bills the request under that key. Errors are in the OpenAI shape, as on ``/v1``.
    """

    def decorator(view):
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = api_error_response(
                    ApiError(f"Method {request.method} is not allowed here; use {', '.join(methods)}.", status=405)
                )
                response["Allow"] = ", ".join(methods)
                return response
            user = await request.auser()
            if not user.is_authenticated:
                return api_error_response(
                    ApiError("Log in to use the playground.", status=401, code="not_authenticated")
                )
            content_type = request.META.get("CONTENT_TYPE", "")
            if request.method in BODY_METHODS and not is_json_content_type(content_type):
                return api_error_response(unsupported_media_type(content_type))
            try:
                api_key = await sync_to_async(key_for_user)(user)
                request.api_key, state = await sync_to_async(admit_key)(request, api_key, scope)
            except ApiError as error:
                return api_error_response(error)
            try:
                response = await view(request, *args, **kwargs)
            except ApiError as error:
                response = api_error_response(error)
            return state.apply(response)

        return wrapper

    return decorator

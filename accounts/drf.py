"""Django REST framework glue: the same key authentication and rate limit as the OpenAI API."""

from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from accounts.auth import authenticate_request
from accounts.models import ApiKey
from gpucloud.openai_errors import insufficient_scope


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        api_key, state = authenticate_request(request._request, scope=None)
        request._request.ratelimit_state = state
        return api_key.user, api_key

    def authenticate_header(self, request):
        return "Bearer"


class HasManagementScope(BasePermission):
    def has_permission(self, request, view):
        if not isinstance(request.auth, ApiKey):
            return False
        if not request.auth.has_scope(ApiKey.Scope.MANAGEMENT):
            raise insufficient_scope(ApiKey.Scope.MANAGEMENT)
        return True

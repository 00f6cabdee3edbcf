"""The management API's base view (kept apart from accounts.drf, which DRF's settings import), and
API keys over REST."""

from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_is_limited, api_key_revoke, api_key_update
from gpucloud.openai_errors import ApiError, invalid_request


class ManagementAPIView(APIView):
    """Key auth with the management scope (the DRF defaults), plus the rate-limit headers."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        state = getattr(request._request, "ratelimit_state", None)
        if state is not None:
            state.apply(response)
        return response


# --- API keys over REST: GET/POST /api/keys, GET/PATCH/DELETE /api/keys/{id} -----------------


class ApiKeySerializer(serializers.ModelSerializer):
    key_prefix = serializers.CharField(source="display_prefix", read_only=True)
    max_budget = serializers.DecimalField(
        max_digits=18, decimal_places=8, min_value=Decimal("0"), allow_null=True, required=False, coerce_to_string=False
    )
    spend_this_period = serializers.SerializerMethodField()
    state = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "key_prefix", "scopes", "rpm", "priority", "allowed_models", "max_budget", "budget_period",
            "budget_soft_percent", "tpm", "max_parallel", "trusted_only", "spend_this_period", "expires_at",
            "revoked_at", "created_at", "last_used_at", "request_count", "state",
        ]  # fmt: skip
        read_only_fields = ["priority", "revoked_at", "created_at", "last_used_at", "request_count"]

    def get_spend_this_period(self, api_key: ApiKey) -> float:
        from billing.selectors import key_spend

        return float(key_spend(api_key))

    def get_state(self, api_key: ApiKey) -> str:
        return "revoked" if api_key.is_revoked else "expired" if api_key.is_expired else "active"


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.CharField(max_length=20), default=[ApiKey.Scope.INFERENCE])
    rpm = serializers.IntegerField(min_value=1, max_value=ApiKey.RPM_MAX, required=False)
    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200), default=list)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    max_budget = serializers.DecimalField(
        max_digits=18, decimal_places=8, min_value=Decimal("0"), allow_null=True, default=None
    )
    budget_period = serializers.ChoiceField(choices=ApiKey.BudgetPeriod.choices, default=ApiKey.BudgetPeriod.MONTH)
    budget_soft_percent = serializers.IntegerField(min_value=1, max_value=100, default=80)
    tpm = serializers.IntegerField(min_value=1, max_value=ApiKey.TPM_MAX, allow_null=True, default=None)
    max_parallel = serializers.IntegerField(
        min_value=1, max_value=ApiKey.MAX_PARALLEL_MAX, allow_null=True, default=None
    )
    trusted_only = serializers.BooleanField(default=False)


class ApiKeyUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    rpm = serializers.IntegerField(min_value=1, max_value=ApiKey.RPM_MAX, required=False)
    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    max_budget = serializers.DecimalField(
        max_digits=18, decimal_places=8, min_value=Decimal("0"), allow_null=True, required=False
    )
    budget_period = serializers.ChoiceField(choices=ApiKey.BudgetPeriod.choices, required=False)
    budget_soft_percent = serializers.IntegerField(min_value=1, max_value=100, required=False)
    tpm = serializers.IntegerField(min_value=1, max_value=ApiKey.TPM_MAX, allow_null=True, required=False)
    max_parallel = serializers.IntegerField(
        min_value=1, max_value=ApiKey.MAX_PARALLEL_MAX, allow_null=True, required=False
    )
    trusted_only = serializers.BooleanField(required=False)


def _validation_error(error: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(error.message_dict if hasattr(error, "error_dict") else error.messages)


class KeysView(ManagementAPIView):
    """``GET /api/keys``: the owner's keys (never their secrets). ``POST``: create one; the response
    holds the plaintext ``key`` this once. A key with a budget, TPM or concurrency limit may not
    create keys (each would bring limits of its own), and a new key gets no scope or model the
    calling key lacks."""

    def get(self, request):
        keys = ApiKey.objects.filter(user=request.user)
        return Response({"object": "list", "data": ApiKeySerializer(keys, many=True).data})

    def post(self, request):
        caller: ApiKey = request.auth
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if api_key_is_limited(caller):
            raise ApiError(
                "This key has a budget, token or concurrency limit, so it cannot create keys. "
                "Use an unlimited management key or the dashboard.",
                status=403,
                type="permission_error",
                code="limited_key",
            )
        if not set(data["scopes"]) <= set(caller.scopes):
            raise invalid_request("A key cannot grant a scope it does not have.", param="scopes")
        if caller.trusted_only and not data["trusted_only"]:
            raise invalid_request(
                "This key runs only on trusted nodes: the keys it creates must too.", param="trusted_only"
            )
        if caller.allowed_models and (
            not data["allowed_models"] or not set(data["allowed_models"]) <= set(caller.allowed_models)
        ):
            raise invalid_request(
                f"This key may only use {', '.join(caller.allowed_models)}: the new key must be limited to those.",
                param="allowed_models",
            )
        try:
            api_key, raw_key = api_key_create(user=request.user, **data)
        except DjangoValidationError as error:
            raise _validation_error(error) from None
        response = Response({**ApiKeySerializer(api_key).data, "key": raw_key}, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"  # the plaintext key must not linger in a cache
        return response


class KeyDetailView(ManagementAPIView):
    """``GET/PATCH/DELETE /api/keys/{id}``. PATCH changes name and limits: a key may tighten but never
    loosen its own limits, and a limited key may only tighten any key's. DELETE revokes the key."""

    def get_object(self, request, key_id: int) -> ApiKey:
        api_key = ApiKey.objects.select_related("user").filter(pk=key_id, user=request.user).first()
        if api_key is None:  # another user's key is as unknown as a missing one
            raise ApiError(f"No API key with id {key_id}.", status=404, code="key_not_found")
        return api_key

    def get(self, request, key_id):
        return Response(ApiKeySerializer(self.get_object(request, key_id)).data)

    def patch(self, request, key_id):
        api_key = self.get_object(request, key_id)
        serializer = ApiKeyUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        caller: ApiKey = request.auth
        allow_loosen = api_key.pk != caller.pk and not api_key_is_limited(caller)
        try:
            api_key_update(api_key=api_key, allow_loosen=allow_loosen, **serializer.validated_data)
        except DjangoValidationError as error:
            raise _validation_error(error) from None
        return Response(ApiKeySerializer(api_key).data)

    def delete(self, request, key_id):
        api_key_revoke(api_key=self.get_object(request, key_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

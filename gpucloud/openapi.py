"""The API's OpenAPI 3.1 schema (``GET /api/schema``) and its Swagger UI (``/docs/``).

drf-spectacular describes the DRF views under ``/api/``; what it cannot read from the code (the
response envelopes built in ``get``/``post``, the OpenAI error shape, the bearer key) is given
here, in one place, by view extensions: the view modules stay as they are. The OpenAI-compatible
``/v1`` endpoints are plain async Django views: :func:`add_v1_paths`, a postprocessing hook, adds
them, with request bodies from the pydantic request models in ``inference.schemas`` (their own
JSON Schema, ``$defs`` hoisted into the components) and the response shapes below.

The schema and the docs are public: they describe the API and hold nothing of any account.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerSplitView
from rest_framework import serializers

REF_PREFIX = "#/components/schemas/"
ERROR_REF = {"$ref": REF_PREFIX + "Error"}
V1_REQUEST_MODELS = ("ChatCompletionRequest", "CompletionRequest", "EmbeddingRequest")


# --- The OpenAI error shape and the bearer key ----------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What was wrong and what to do.")
    type = serializers.CharField(help_text="invalid_request_error, permission_error, server_error, ...")
    param = serializers.CharField(allow_null=True, help_text="The request parameter at fault, if one is.")
    code = serializers.CharField(allow_null=True, help_text="A machine-readable code, e.g. invalid_api_key.")


class ErrorSerializer(serializers.Serializer):
    """Every error, in the OpenAI shape."""

    error = ErrorDetailSerializer()


ERROR_MEANINGS = {
    400: "The request is invalid; `param` names the field.",
    401: "No API key, or one that is unknown, revoked or expired (`invalid_api_key`).",
    403: "The key lacks the scope, the model, or (fleet and deployments) an operator account.",
    404: "Not found.",
    413: "The body is larger than the server accepts.",
    415: "The body is not JSON.",
    429: "Rate limit (`rate_limit_exceeded`, with `Retry-After`) or no credit left (`insufficient_quota`).",
    502: "The GPU node failed or was lost while serving the request.",
    503: "No GPU node took the request in time, the model has no running replica, or the platform is "
    "briefly unavailable.",
    504: "The GPU node stopped sending output.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {status: OpenApiResponse(ErrorSerializer, description=ERROR_MEANINGS[status]) for status in statuses}


MANAGEMENT_ERRORS = (400, 401, 403, 429)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.drf.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`gpc_...`) from the dashboard's API keys page: `Authorization: Bearer "
            "<key>`. The `/v1` endpoints need the `inference` scope, `/api` ones the `management` scope.",
        }


# --- The DRF views' envelopes -------------------------------------------------------------------------


def _list_of(name: str, item, *, paged: bool = False, **extra) -> serializers.Serializer:
    fields = {"object": serializers.CharField(default="list"), **extra, "data": item}
    if paged:
        fields |= {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
        }
    return inline_serializer(name, fields)


PAGING = [
    OpenApiParameter("limit", int, description="Page size (default 100, at most 1000)."),
    OpenApiParameter("offset", int, description="Rows to skip."),
]


def _annotate(target: str, **methods) -> type[OpenApiViewExtension]:
    """A view extension that documents the view ``target`` (a dotted path) with ``methods``
    (``get=extend_schema(...)``, ...), without touching the view's module."""

    def view_replacement(self):
        view = type(self.target_class.__name__, (self.target_class,), {"__module__": self.target_class.__module__})
        return extend_schema_view(**methods)(view)

    return type(
        f"{target.rsplit('.', 1)[1]}Schema",
        (OpenApiViewExtension,),
        {"target_class": target, "view_replacement": view_replacement},
    )


def _usage_view():
    from inference.api import UsageRecordSerializer

    totals = inline_serializer(
        "UsageTotals",
        {
            "requests": serializers.IntegerField(),
            "prompt_tokens": serializers.IntegerField(),
            "completion_tokens": serializers.IntegerField(),
            "cost": serializers.FloatField(),
        },
    )
    return _annotate(
        "inference.api.UsageView",
        get=extend_schema(
            operation_id="getUsage",
            summary="Usage records and totals",
            tags=["usage and billing"],
            parameters=[
                OpenApiParameter("key", str, description="A key's prefix, e.g. gpc_1a2b3c4d5e6f."),
                OpenApiParameter("model", str, description="A model id."),
                OpenApiParameter("start", str, description="ISO 8601 time or Unix seconds (inclusive)."),
                OpenApiParameter("end", str, description="ISO 8601 time or Unix seconds (exclusive)."),
                *PAGING,
            ],
            responses={
                200: _list_of("UsageList", UsageRecordSerializer(many=True), paged=True, totals=totals),
                **errors(*MANAGEMENT_ERRORS),
            },
        ),
    )


def _billing_views():
    from billing.api import LedgerEntrySerializer
    from billing.models import LedgerEntry

    balance = inline_serializer(
        "Balance",
        {
            "object": serializers.CharField(default="balance"),
            "currency": serializers.CharField(default="usd"),
            "balance": serializers.FloatField(),
            "spend_this_month": serializers.FloatField(),
        },
    )
    return [
        _annotate(
            "billing.api.BalanceView",
            get=extend_schema(
                operation_id="getBalance",
                summary="Credit balance",
                tags=["usage and billing"],
                responses={200: balance, **errors(*MANAGEMENT_ERRORS)},
            ),
        ),
        _annotate(
            "billing.api.LedgerView",
            get=extend_schema(
                operation_id="listLedgerEntries",
                summary="Ledger entries",
                tags=["usage and billing"],
                parameters=[OpenApiParameter("kind", str, enum=LedgerEntry.Kind.values), *PAGING],
                responses={
                    200: _list_of("LedgerList", LedgerEntrySerializer(many=True), paged=True),
                    **errors(*MANAGEMENT_ERRORS),
                },
            ),
        ),
    ]


def _key_views():
    from accounts.api import ApiKeyCreateSerializer, ApiKeySerializer, ApiKeyUpdateSerializer

    class ApiKeyCreatedSerializer(ApiKeySerializer):
        key = serializers.CharField(help_text="The plaintext key, shown this once.")

        class Meta(ApiKeySerializer.Meta):
            fields = [*ApiKeySerializer.Meta.fields, "key"]

    tags = ["API keys"]
    return [
        _annotate(
            "accounts.api.KeysView",
            get=extend_schema(
                operation_id="listApiKeys",
                summary="List your API keys",
                tags=tags,
                responses={200: _list_of("ApiKeyList", ApiKeySerializer(many=True)), **errors(*MANAGEMENT_ERRORS)},
            ),
            post=extend_schema(
                operation_id="createApiKey",
                summary="Create an API key",
                tags=tags,
                request=ApiKeyCreateSerializer,
                responses={201: ApiKeyCreatedSerializer, **errors(*MANAGEMENT_ERRORS, 415)},
            ),
        ),
        _annotate(
            "accounts.api.KeyDetailView",
            get=extend_schema(
                operation_id="retrieveApiKey",
                summary="An API key",
                tags=tags,
                responses={200: ApiKeySerializer, **errors(*MANAGEMENT_ERRORS, 404)},
            ),
            patch=extend_schema(
                operation_id="updateApiKey",
                summary="Change a key's name and limits",
                tags=tags,
                request=ApiKeyUpdateSerializer,
                responses={200: ApiKeySerializer, **errors(*MANAGEMENT_ERRORS, 404, 415)},
            ),
            delete=extend_schema(
                operation_id="revokeApiKey",
                summary="Revoke an API key",
                tags=tags,
                responses={204: None, **errors(*MANAGEMENT_ERRORS, 404)},
            ),
        ),
    ]


def _fleet_views():
    from deployments.api import DeploymentSerializer, DeploymentUpdateSerializer, RegisterSerializer

    gpus = inline_serializer(
        "NodeGpu",
        {
            "index": serializers.IntegerField(),
            "name": serializers.CharField(),
            "memory_total_mb": serializers.IntegerField(),
            "memory_used_mb": serializers.IntegerField(required=False),
            "utilization": serializers.FloatField(required=False),
            "temperature_c": serializers.FloatField(required=False),
            "simulated": serializers.BooleanField(required=False),
        },
        many=True,
    )
    replicas = inline_serializer(
        "NodeReplica",
        {
            "deployment": serializers.CharField(),
            "state": serializers.CharField(),
            "gpus": serializers.ListField(child=serializers.IntegerField()),
            "memory_gb": serializers.FloatField(),
        },
        many=True,
    )
    nodes = inline_serializer(
        "Node",
        {
            "id": serializers.IntegerField(),
            "name": serializers.CharField(),
            "host": serializers.CharField(),
            "engine": serializers.CharField(),
            "status": serializers.ChoiceField(choices=["online", "draining", "offline", "left"]),
            "credential_revoked": serializers.BooleanField(),
            "slots": serializers.IntegerField(),
            "in_flight": serializers.IntegerField(),
            "queues": serializers.ListField(child=serializers.CharField()),
            "gpus": gpus,
            "replicas": replicas,
            "last_heartbeat_at": serializers.DateTimeField(allow_null=True),
            "registered_at": serializers.DateTimeField(),
        },
        many=True,
    )
    queues = inline_serializer(
        "QueueDepth",
        {
            "deployment": serializers.CharField(),
            "model": serializers.CharField(),
            "queue": serializers.CharField(),
            "waiting": serializers.IntegerField(),
        },
        many=True,
    )
    registered = inline_serializer(
        "NodeRegistered",
        {
            "node": serializers.CharField(),
            "credential": serializers.CharField(help_text="The node's own credential (gpcn_...), shown this once."),
            "websocket_path": serializers.CharField(),
            "heartbeat_interval": serializers.FloatField(),
            "protocol": serializers.IntegerField(),
        },
    )
    fleet, deployments = ["fleet (operators)"], ["deployments (operators)"]
    return [
        _annotate(
            "deployments.api.RegisterView",
            post=extend_schema(
                operation_id="registerNode",
                summary="A GPU node joins with a join token",
                tags=fleet,
                request=RegisterSerializer,
                responses={201: registered, **errors(400, 401, 415)},
            ),
        ),
        _annotate(
            "deployments.api.WorkersView",
            get=extend_schema(
                operation_id="listNodes",
                summary="GPU nodes",
                tags=fleet,
                responses={200: _list_of("NodeList", nodes), **errors(*MANAGEMENT_ERRORS)},
            ),
        ),
        _annotate(
            "deployments.api.QueuesView",
            get=extend_schema(
                operation_id="listQueues",
                summary="Requests waiting per deployment",
                tags=fleet,
                responses={200: _list_of("QueueList", queues), **errors(*MANAGEMENT_ERRORS)},
            ),
        ),
        _annotate(
            "deployments.api.DeploymentsView",
            get=extend_schema(
                operation_id="listDeployments",
                summary="Deployments",
                tags=deployments,
                responses={
                    200: _list_of("DeploymentList", DeploymentSerializer(many=True)),
                    **errors(*MANAGEMENT_ERRORS),
                },
            ),
            post=extend_schema(
                operation_id="createDeployment",
                summary="Create a deployment and place its replicas",
                tags=deployments,
                request=DeploymentSerializer,
                responses={201: DeploymentSerializer, **errors(*MANAGEMENT_ERRORS, 415)},
            ),
        ),
        _annotate(
            "deployments.api.DeploymentDetailView",
            get=extend_schema(
                operation_id="retrieveDeployment",
                summary="A deployment",
                tags=deployments,
                responses={200: DeploymentSerializer, **errors(*MANAGEMENT_ERRORS, 404)},
            ),
            patch=extend_schema(
                operation_id="updateDeployment",
                summary="Scale, reconfigure, stop or start a deployment",
                tags=deployments,
                request=DeploymentUpdateSerializer,
                responses={200: DeploymentSerializer, **errors(*MANAGEMENT_ERRORS, 404, 415)},
            ),
            delete=extend_schema(
                operation_id="deleteDeployment",
                summary="Delete a deployment",
                tags=deployments,
                responses={204: None, **errors(*MANAGEMENT_ERRORS, 404)},
            ),
        ),
    ]


def _host_views():
    usd = {"help_text": "USD, an exact decimal string."}
    served = {"requests": serializers.IntegerField(), "tokens": serializers.IntegerField()}
    earnings = inline_serializer(
        "HostEarnings",
        {
            "object": serializers.CharField(default="host.earnings"),
            "host": serializers.CharField(),
            "revenue_share": serializers.CharField(help_text="The share of a request's charge the host earns."),
            "currency": serializers.CharField(default="usd"),
            **{
                name: serializers.CharField(**usd)
                for name in ("pending", "available", "held", "in_payout", "paid", "earned")
            },
            **served,
            "per_node": inline_serializer(
                "HostEarningsNode",
                {"node_id": serializers.IntegerField(), "node": serializers.CharField(),
                 "earned": serializers.CharField(**usd), **served},
                many=True,
            ),
            "per_model": inline_serializer(
                "HostEarningsModel",
                {"model": serializers.CharField(), "earned": serializers.CharField(**usd), **served},
                many=True,
            ),
            "per_day": inline_serializer(
                "HostEarningsDay", {"day": serializers.DateField(), "earned": serializers.CharField(**usd)}, many=True
            ),
        },
    )  # fmt: skip
    return _annotate(
        "marketplace.api.HostEarningsView",
        get=extend_schema(
            operation_id="getHostEarnings",
            summary="A GPU host's earnings (404 not_a_host for an account that is not a host)",
            tags=["GPU hosts"],
            responses={200: earnings, **errors(*MANAGEMENT_ERRORS, 404)},
        ),
    )


def register_view_extensions() -> None:
    """Document the DRF views (called once, when this module's URLs load)."""
    _usage_view()
    _billing_views()
    _key_views()
    _fleet_views()
    _host_views()


# --- The /v1 endpoints ----------------------------------------------------------------------------

_USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "cost": {"type": "number", "description": "What the request was charged, in USD."},
    },
    "required": ["prompt_tokens", "total_tokens"],
}
_FINISH = {"type": ["string", "null"], "description": "stop, length, ..."}


def _completion_envelope(object_name: str, choice: dict, *, usage_required: bool) -> dict:
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": [object_name]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": {"$ref": "#/components/schemas/Usage"}
            if usage_required
            else {"anyOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}]},
        },
        "required": ["id", "object", "created", "model", "choices", *(["usage"] if usage_required else [])],
    }


RESPONSE_SCHEMAS = {
    "Usage": _USAGE,
    "ChatCompletion": _completion_envelope(
        "chat.completion",
        {
            "type": "object",
            "properties": {
                "index": {"type": "integer"},
                "message": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string", "enum": ["assistant"]},
                        "content": {"type": ["string", "null"]},
                        "refusal": {"type": ["string", "null"]},
                    },
                    "required": ["role", "content"],
                },
                "logprobs": {},
                "finish_reason": _FINISH,
            },
            "required": ["index", "message", "finish_reason"],
        },
        usage_required=True,
    ),
    "ChatCompletionChunk": _completion_envelope(
        "chat.completion.chunk",
        {
            "type": "object",
            "properties": {
                "index": {"type": "integer"},
                "delta": {"type": "object", "properties": {"role": {"type": "string"}, "content": {"type": "string"}}},
                "logprobs": {},
                "finish_reason": _FINISH,
            },
            "required": ["index", "delta"],
        },
        usage_required=False,
    ),
    "Completion": _completion_envelope(
        "text_completion",
        {
            "type": "object",
            "properties": {
                "index": {"type": "integer"},
                "text": {"type": "string"},
                "logprobs": {},
                "finish_reason": _FINISH,
            },
            "required": ["index", "text", "finish_reason"],
        },
        usage_required=True,
    ),
    "EmbeddingList": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "model": {"type": "string"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "object": {"type": "string", "enum": ["embedding"]},
                        "index": {"type": "integer"},
                        "embedding": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "string", "description": "base64 of little-endian float32"},
                            ]
                        },
                    },
                    "required": ["object", "index", "embedding"],
                },
            },
            "usage": {"$ref": "#/components/schemas/Usage"},
        },
        "required": ["object", "model", "data", "usage"],
    },
    "Model": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
        "required": ["id", "object", "created", "owned_by"],
    },
    "ModelList": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
        "required": ["object", "data"],
    },
}

RATE_LIMIT_HEADERS = {
    name: {"schema": {"type": "string"}, "description": description}
    for name, description in (
        ("x-request-id", "The request's id (also on errors)."),
        ("x-ratelimit-limit-requests", "The key's requests per minute."),
        ("x-ratelimit-remaining-requests", "Requests left in the current minute."),
        ("x-ratelimit-reset-requests", "When the minute frees a request, e.g. 1.5s."),
    )
}


def _error_responses(*statuses: int) -> dict:
    return {
        str(status): {"description": ERROR_MEANINGS[status], "content": {"application/json": {"schema": ERROR_REF}}}
        for status in statuses
    }


def _operation(operation_id: str, summary: str, *, body: str | None, ok: dict, errors: tuple[int, ...], description=""):
    operation = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": ["OpenAI-compatible API"],
        "security": [{"ApiKeyAuth": []}],
        "responses": {"200": {"headers": RATE_LIMIT_HEADERS, **ok}, **_error_responses(*errors)},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return operation


def _json(schema: str, description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _json_or_stream(schema: str, chunk: str, description: str) -> dict:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": f"With `stream: true`: server-sent events, each `data: <{chunk} JSON>`, then "
                    "`data: [DONE]`. An error after the stream began is sent as an error event before `[DONE]`.",
                }
            },
        },
    }


GENERATION_ERRORS = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)


def v1_paths(bodies: dict[str, str]) -> dict:
    """The /v1 operations; ``bodies`` names the request models' components."""
    return {
        "/v1/models": {
            "get": _operation(
                "listModels",
                "Models with a running deployment that the key may use",
                body=None,
                ok=_json("ModelList", "The models."),
                errors=(401, 403, 429),
            )
        },
        "/v1/models/{model}": {
            "get": {
                **_operation(
                    "retrieveModel", "A model", body=None, ok=_json("Model", "The model."), errors=(401, 403, 404, 429)
                ),
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            }
        },
        "/v1/chat/completions": {
            "post": _operation(
                "createChatCompletion",
                "Chat completion, whole or streamed",
                body=bodies["ChatCompletionRequest"],
                ok=_json_or_stream("ChatCompletion", "ChatCompletionChunk", "The completion, or its stream."),
                errors=GENERATION_ERRORS,
                description="The request is admitted (rate limits, balance and budget) before it is queued; "
                "`usage.cost` is what it was charged.",
            )
        },
        "/v1/completions": {
            "post": _operation(
                "createCompletion",
                "Text completion, whole or streamed",
                body=bodies["CompletionRequest"],
                ok=_json_or_stream("Completion", "Completion", "The completion, or its stream."),
                errors=GENERATION_ERRORS,
            )
        },
        "/v1/embeddings": {
            "post": _operation(
                "createEmbedding",
                "Embeddings",
                body=bodies["EmbeddingRequest"],
                ok=_json("EmbeddingList", "One vector per input."),
                errors=GENERATION_ERRORS,
            )
        },
    }


def request_model_schemas() -> dict:
    """The /v1 request models' JSON Schemas, by component name, their ``$defs`` among them."""
    from inference import schemas

    components = {}
    for model in (schemas.ChatCompletionRequest, schemas.CompletionRequest, schemas.EmbeddingRequest):
        schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


def _renamed(node, names: dict[str, str]):
    """``node`` with its references to the components in ``names`` pointed at their new names."""
    if isinstance(node, dict):
        return {
            key: REF_PREFIX + names.get(value.removeprefix(REF_PREFIX), value.removeprefix(REF_PREFIX))
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX)
            else _renamed(value, names)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renamed(value, names) for value in node]
    return node


def _free_names(wanted, taken: set[str]) -> dict[str, str]:
    """A new name (``V1…``) for each of ``wanted`` that is ``taken`` by another schema."""
    names = {}
    for name in wanted:
        if name in taken:
            new = f"V1{name}"
            while new in taken or new in wanted:
                new = f"V1{new}"
            names[name] = new
            taken.add(new)
    return names


def add_v1_paths(result: dict, generator, request, public: bool) -> dict:
    """drf-spectacular postprocessing hook: the /v1 endpoints, their request and response schemas.

    A name the DRF views' components already use (or a request model's ``$defs`` shares with the
    response shapes) is prefixed with ``V1``, and references follow, so no schema replaces another.
    """
    components = result.setdefault("components", {}).setdefault("schemas", {})
    taken = set(components)
    response_names = _free_names(RESPONSE_SCHEMAS, taken)
    responses = {response_names.get(n, n): _renamed(schema, response_names) for n, schema in RESPONSE_SCHEMAS.items()}
    taken |= set(responses)
    requests = request_model_schemas()
    request_names = _free_names(requests, taken)
    requests = {request_names.get(n, n): _renamed(schema, request_names) for n, schema in requests.items()}
    components.update(responses)
    components.update(requests)
    bodies = {name: request_names.get(name, name) for name in V1_REQUEST_MODELS}
    result["paths"] = {**_renamed(v1_paths(bodies), response_names), **result.get("paths", {})}
    return result


# --- Serving it -------------------------------------------------------------------------------------


class SchemaView(SpectacularJSONAPIView):
    """``GET /api/schema``: the OpenAPI schema as JSON, for anyone."""

    authentication_classes = []


class DocsView(SpectacularSwaggerSplitView):
    """``/docs/``: Swagger UI from drf-spectacular-sidecar's files, its set-up script a file of its
    own (``?script``), so that it runs under the site's Content-Security-Policy ('self' only)."""

    authentication_classes = []
    template_name = "apidocs/swagger_ui.html"
    url_name = "api-schema"
    title = "GPU Cloud API"


register_view_extensions()

urlpatterns = [
    path("api/schema", SchemaView.as_view(), name="api-schema"),
    path("docs/", DocsView.as_view(), name="api-docs"),
]

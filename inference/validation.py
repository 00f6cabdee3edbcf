"""Validation of OpenAI request bodies into typed requests.

The rules live in :mod:`inference.schemas` (pydantic models, which also describe ``/v1`` in the
OpenAPI schema); this module parses a body, validates it with its model, and turns the first
error into an :class:`~gpucloud.openai_errors.ApiError` naming the offending ``param`` as a path
(``messages[2].content``), so a client sees exactly what to fix. The typed requests the views use
are plain dataclasses built from the validated models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from gpucloud.jsonbody import parse_json_object
from gpucloud.openai_errors import ApiError, invalid_request
from inference import schemas
from inference.schemas import CHAT_ROLES, MAX_EMBEDDING_INPUTS, MAX_N, MAX_PROMPTS, MAX_STOP_SEQUENCES, show
from nodeprotocol.structured import ENGINE_FEATURES, unsupported_schema_keywords
from nodeprotocol.tokens import count_chat_tokens, count_tokens, message_text

ENCODING_FORMATS = ("float", "base64")


@dataclass(kw_only=True)
class GenerationRequest:
    """What chat and text completions share: the model, sampling, and streaming."""

    model: str
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    user: str | None = None
    stream: bool = False
    include_usage: bool = False
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


@dataclass(kw_only=True)
class ChatRequest(GenerationRequest):
    messages: list[dict]
    tools: list[dict] = field(default_factory=list)
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


@dataclass(kw_only=True)
class CompletionRequest(GenerationRequest):
    prompts: list[str]
    max_tokens: int = 16  # the legacy endpoint's default
    echo: bool = False
    logprobs: int | None = None


@dataclass
class EmbeddingRequest:
    model: str
    inputs: list[str]
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None


def parse_json_body(body: bytes, *, max_size: int | None = None) -> dict:
    """The body as a JSON object, within gpucloud.jsonbody's bounds (depth, size, numbers, strings);
    ``max_size`` defaults to DATA_UPLOAD_MAX_MEMORY_SIZE (given explicitly where Django is not set up)."""
    return parse_json_object(body, max_size=max_size)


# --- pydantic's errors as the client reads them ------------------------------------------------


def _path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _bounds(model: type[BaseModel], loc: tuple) -> tuple[object, object]:
    """The ``ge`` and ``le`` of the top-level field at ``loc``, if it has them."""
    low = high = None
    info = model.model_fields.get(loc[0]) if len(loc) == 1 else None
    for constraint in info.metadata if info is not None else ():
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return low, high


def _message(model: type[BaseModel], error: dict, param: str) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    name = str(error["loc"][-1]) if error["loc"] and not isinstance(error["loc"][-1], int) else param
    if kind == "gpucloud":
        return ctx["message"]
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {name}."
    if kind == "missing":
        return f"Missing required parameter: '{name}'."
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"'{name}' must be an integer, got {show(value)}."
    if kind in ("float_type", "float_parsing"):
        return f"'{name}' must be a number, got {show(value)}."
    if kind == "bool_type":
        return f"'{name}' must be a boolean."
    if kind == "string_type":
        return f"'{name}' must be a string."
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(model, error["loc"])
        if low is not None and high is not None:
            return f"'{name}' must be between {low} and {high}, got {value}."
        if kind == "greater_than_equal":
            return f"'{name}' must be at least {ctx.get('ge')}, got {value}."
        return f"'{name}' must be at most {ctx.get('le')}, got {value}."
    if kind == "literal_error":
        return f"'{name}' must be {ctx.get('expected')}, got {show(value)}."
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"'{name}' must be an object."
    if kind == "list_type":
        return f"'{name}' must be an array."
    if kind == "too_short":
        return f"'{name}' must have at least {ctx.get('min_length')} item(s)."
    if kind == "too_long":
        return f"'{name}' takes at most {ctx.get('max_length')} items."
    if kind == "string_pattern_mismatch":
        return f"'{name}' must match {ctx.get('pattern')}, got {show(value)}."
    return f"Invalid '{name}': {error['msg']}."


def api_error(model: type[BaseModel], error: ValidationError) -> ApiError:
    """The first of pydantic's errors (an unknown argument before anything else) as a 400."""
    errors = error.errors(include_url=False)
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    suffix = (first.get("ctx") or {}).get("suffix", "")
    param = _path(first["loc"])
    if suffix:
        param = f"{param}{suffix}" if suffix[0] in ".[" or not param else f"{param}.{suffix}"
    param = param.lstrip(".") or None
    message = _message(model, first, param or "")
    return invalid_request(message if len(message) <= 300 else f"{message[:297]}...", param=param)


def validate(model: type[BaseModel], data: dict) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise api_error(model, error) from None


# --- typed requests ----------------------------------------------------------------------------


def _sampling(request: schemas.Sampling) -> dict:
    return {
        "model": request.model,
        "temperature": 1.0 if request.temperature is None else float(request.temperature),
        "top_p": 1.0 if request.top_p is None else float(request.top_p),
        "n": request.n or 1,
        "stop": request.stop or [],
        "seed": request.seed,
        "user": request.user,
        "stream": bool(request.stream),
        "include_usage": bool(request.stream_options and request.stream_options.include_usage),
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "logit_bias": request.logit_bias,
    }


def _message_dict(message: schemas.ChatMessage) -> dict:
    cleaned: dict = {"role": message.role, "content": message.content}
    if message.tool_calls:
        cleaned["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in message.tool_calls
        ]
    elif cleaned["content"] is None:
        cleaned["content"] = ""
    if message.tool_call_id is not None:
        cleaned["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        cleaned["name"] = message.name
    return cleaned


def parse_chat_request(body: bytes, *, max_size: int | None = None) -> ChatRequest:
    """Validate a ``POST /v1/chat/completions`` body."""
    request = validate(schemas.ChatCompletionRequest, parse_json_body(body, max_size=max_size))
    tool_choice = request.tool_choice
    response_format = request.response_format.model_dump(by_alias=True, exclude_none=True) if (
        request.response_format is not None
    ) else None  # fmt: skip
    return ChatRequest(
        **_sampling(request),
        max_tokens=request.max_tokens if request.max_tokens is not None else request.max_completion_tokens,
        messages=[_message_dict(m) for m in request.messages],
        tools=[t.model_dump(exclude_none=True) for t in request.tools or []],
        tool_choice=tool_choice.model_dump() if isinstance(tool_choice, BaseModel) else tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=response_format,
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs,
    )


def parse_completion_request(body: bytes, *, max_size: int | None = None) -> CompletionRequest:
    """Validate a ``POST /v1/completions`` body."""
    request = validate(schemas.CompletionRequest, parse_json_body(body, max_size=max_size))
    return CompletionRequest(
        **_sampling(request),
        prompts=request.prompt,
        max_tokens=16 if request.max_tokens is None else request.max_tokens,
        echo=bool(request.echo),
        logprobs=request.logprobs,
    )


def parse_embedding_request(body: bytes, *, max_size: int | None = None) -> EmbeddingRequest:
    """Validate a ``POST /v1/embeddings`` body."""
    request = validate(schemas.EmbeddingRequest, parse_json_body(body, max_size=max_size))
    return EmbeddingRequest(
        model=request.model,
        inputs=request.input,
        encoding_format=request.encoding_format or "float",
        dimensions=request.dimensions,
        user=request.user,
    )


# --- a body as the views use it: the request and its prompt's tokens ---------------------------
# Django-free (inference.bodypool runs them in a process of its own for large bodies).


def chat_body(body: bytes, *, max_size: int | None = None) -> tuple[ChatRequest, str, int]:
    """The chat request, its prompt as one text, and its prompt tokens."""
    chat = parse_chat_request(body, max_size=max_size)
    prompt = "\n".join(f"{m['role']}: {message_text(m)}" for m in chat.messages)
    return chat, prompt, count_chat_tokens(chat.messages, chat.tools)


def completion_body(body: bytes, *, max_size: int | None = None) -> tuple[CompletionRequest, list[int]]:
    """The completion request and each prompt's tokens."""
    params = parse_completion_request(body, max_size=max_size)
    return params, [count_tokens(p) for p in params.prompts]


def embedding_body(body: bytes, *, max_size: int | None = None) -> tuple[EmbeddingRequest, list[int]]:
    """The embeddings request and each input's tokens."""
    params = parse_embedding_request(body, max_size=max_size)
    return params, [count_tokens(text) for text in params.inputs]


# --- what the deployment's engine can honour ---------------------------------------------------


def used_features(params: GenerationRequest) -> dict[str, str]:
    """The optional features a request uses, each with the param that asks for it."""
    used = {}
    if params.presence_penalty:
        used["presence_penalty"] = "presence_penalty"
    if params.frequency_penalty:
        used["frequency_penalty"] = "frequency_penalty"
    if params.logit_bias:
        used["logit_bias"] = "logit_bias"
    if isinstance(params, ChatRequest):
        if params.tools:
            used["tools"] = "tools"
        if params.response_format and params.response_format["type"] != "text":
            used[params.response_format["type"]] = "response_format"
        if params.logprobs:
            used["logprobs"] = "logprobs"
    if isinstance(params, CompletionRequest) and params.logprobs is not None:
        used["logprobs"] = "logprobs"
    return used


def check_engine_support(params: GenerationRequest, engine: str) -> None:
    """400 naming the param when the deployment's engine cannot honour a feature the request uses,
    or cannot enforce a JSON schema it gives: nothing is silently ignored."""
    supported = ENGINE_FEATURES.get(engine, frozenset())
    for feature, param in used_features(params).items():
        if feature not in supported:
            raise invalid_request(
                f"'{param}' ({feature}) is not supported by this model's engine ({engine}).", param=param
            )
    if engine != "simulated" or not isinstance(params, ChatRequest):
        return  # an upstream server enforces schemas itself, and says what it cannot
    schemas_used = [(f"tools[{i}].function.parameters", t["function"].get("parameters")) for i, t in
                    enumerate(params.tools)]  # fmt: skip
    if params.response_format and params.response_format["type"] == "json_schema":
        schemas_used.append(("response_format.json_schema.schema", params.response_format["json_schema"].get("schema")))
    for param, schema in schemas_used:
        unsupported = unsupported_schema_keywords(schema or {})
        if unsupported:
            raise invalid_request(
                f"This model's engine cannot enforce the JSON schema keyword(s) {', '.join(unsupported)}; "
                "leave them out of the schema.",
                param=param,
            )


__all__ = [
    "CHAT_ROLES",
    "MAX_EMBEDDING_INPUTS",
    "MAX_N",
    "MAX_PROMPTS",
    "MAX_STOP_SEQUENCES",
    "ApiError",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "GenerationRequest",
    "chat_body",
    "check_engine_support",
    "completion_body",
    "embedding_body",
    "parse_chat_request",
    "parse_completion_request",
    "parse_embedding_request",
    "parse_json_body",
]

"""The ``/v1`` request bodies as pydantic models: one source of truth for every field's rule.

:mod:`inference.validation` validates bodies with these models and turns the first error into an
OpenAI-shaped 400 whose ``param`` is a path (``messages[2].content``); the OpenAPI schema of
``/v1`` is generated from the same models (``ChatCompletionRequest.model_json_schema()``).

Rules a field's type cannot say are validators raising :func:`invalid` with the message the client
reads; ``param`` is the field's location, to which an error may add a ``suffix`` (a part inside it).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

MAX_N = 8
MAX_STOP_SEQUENCES = 4
MAX_PROMPTS = 16
MAX_EMBEDDING_INPUTS = 2048
MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


def invalid(message: str, suffix: str = "") -> PydanticCustomError:
    """A validation error with the client's message; ``suffix`` extends the param (``[1].text``)."""
    return PydanticCustomError("gpucloud", "{message}", {"message": message, "suffix": suffix})


def show(value: Any) -> str:
    """A client's value in an error message, cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Strict(BaseModel):
    """Strict types (no "1" for 1, no true for 1) and unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Lenient(BaseModel):
    """Strict types; unknown fields ignored (parts of messages the SDK echoes back: refusal, audio…)."""

    model_config = ConfigDict(strict=True, extra="ignore")


# --- shared fields ---------------------------------------------------------------------------


def _model_name(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise invalid("'model' must be a non-empty string.")
    return value


ModelName = Annotated[str, BeforeValidator(_model_name)]


def _stop(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise invalid("'stop' must be a string or an array of strings.")
    if len(value) > MAX_STOP_SEQUENCES:
        raise invalid(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences.")
    if any(s == "" for s in value):
        raise invalid("Stop sequences must not be empty.")
    return value


Stop = Annotated[
    list[str],
    BeforeValidator(_stop),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP_SEQUENCES}]}
    ),
]


def _logit_bias(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("'logit_bias' must be an object mapping token ids to biases from -100 to 100.")
    if len(value) > 300:
        raise invalid("'logit_bias' takes at most 300 tokens.")
    for key, bias in value.items():
        if not key.isdigit() or len(key) > 10:
            raise invalid(f"'logit_bias' keys must be token ids (non-negative integers), got {show(key)}.")
        if not isinstance(bias, int | float) or isinstance(bias, bool) or not -100 <= bias <= 100:
            raise invalid(f"Each 'logit_bias' value must be a number from -100 to 100, got {show(bias)}.", f".{key}")
    return {str(int(k)): float(v) for k, v in value.items()}


LogitBias = Annotated[
    dict[str, float] | None,
    BeforeValidator(_logit_bias),
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}}),
]


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """What chat and text completions share: the model, sampling and streaming."""

    model: ModelName
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    stop: Stop | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    user: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: LogitBias = None
    # Accepted for compatibility with OpenAI clients; they do not change what is generated.
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        return self


# --- chat ------------------------------------------------------------------------------------


class TextPart(Strict):
    type: Literal["text"]
    text: str


def _content(value: Any) -> Any:
    """A string, or text parts joined by newlines; None passes (the message decides)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid("Only text content parts ({'type': 'text', 'text': ...}) are supported.", f"[{index}]")
            if not isinstance(part.get("text"), str):
                raise invalid("A text content part needs a string 'text'.", f"[{index}].text")
            texts.append(part["text"])
        return "\n".join(texts)
    raise invalid("'content' must be a string or a list of text parts.")


Content = Annotated[
    str | None,
    BeforeValidator(_content),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": TextPart.model_json_schema()},
                {"type": "null"},
            ]
        }
    ),
]


class FunctionCall(Lenient):
    name: str
    arguments: str


class ToolCall(Lenient):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    """One message; which fields a role takes is checked after its fields."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _needs_content(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise invalid("Each message must be an object with 'role' and 'content'.")
        if "content" not in data and not (data.get("role") == "assistant" and data.get("tool_calls")):
            raise invalid("Missing required parameter: 'content'.", ".content")
        return data

    @model_validator(mode="after")
    def _role_rules(self):
        if self.content is None and self.role != "assistant":
            raise invalid("'content' must be a string or a list of text parts.", ".content")
        if self.tool_calls is not None and self.role != "assistant":
            raise invalid("Only assistant messages carry 'tool_calls'.", ".tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise invalid("A tool message needs the 'tool_call_id' of the call it answers.", ".tool_call_id")
        if self.tool_call_id is not None and self.role != "tool":
            raise invalid("Only tool messages carry 'tool_call_id'.", ".tool_call_id")
        return self


class FunctionDefinition(Strict):
    name: str = Field(pattern=FUNCTION_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


def _tool_choice(value: Any) -> Any:
    if isinstance(value, str) and value not in ("none", "auto", "required"):
        raise invalid(f"'tool_choice' must be 'none', 'auto', 'required' or a named function, got {show(value)}.")
    return value


ToolChoice = Annotated[Literal["none", "auto", "required"] | NamedToolChoice, BeforeValidator(_tool_choice)]


class JsonSchemaFormat(Strict):
    name: str = Field(pattern=FUNCTION_NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise invalid("A 'json_schema' response format needs its 'json_schema' object.", ".json_schema")
        if self.type != "json_schema" and self.json_schema is not None:
            raise invalid("'json_schema' goes only with the type 'json_schema'.", ".json_schema")
        return self


def _check_schema(schema: dict, suffix: str) -> None:
    """A JSON schema the validator understands (draft 2020-12), else a 400 at ``suffix``."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
        raise invalid(f"Invalid JSON schema{f' at {where}' if where else ''}: {error.message[:120]}", suffix) from None


class ChatCompletionRequest(Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="before")
    @classmethod
    def _messages_is_a_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and "messages" in data:
            messages = data["messages"]
            if not isinstance(messages, list) or not messages:
                raise invalid("'messages' must be a non-empty array of message objects.", "messages")
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise invalid(
                "Set either 'max_tokens' or 'max_completion_tokens', not both with different values.",
                "max_completion_tokens",
            )
        self._check_tools()
        self._check_tool_messages()
        if self.top_logprobs is not None and not self.logprobs:
            raise invalid("'top_logprobs' needs 'logprobs' set to true.", "top_logprobs")
        schema_format = self.response_format.json_schema if self.response_format else None
        if schema_format is not None and schema_format.schema_ is not None:
            _check_schema(schema_format.schema_, "response_format.json_schema.schema")
        return self

    def _check_tools(self) -> None:
        names = []
        for index, tool in enumerate(self.tools or []):
            if tool.function.name in names:
                raise invalid(f"Two tools are named {show(tool.function.name)}.", f"tools[{index}].function.name")
            names.append(tool.function.name)
            if tool.function.parameters is not None:
                _check_schema(tool.function.parameters, f"tools[{index}].function.parameters")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise invalid("'tool_choice' is only allowed when 'tools' are given.", "tool_choice")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise invalid(
                f"'tool_choice' names the function {show(self.tool_choice.function.name)}, which is not among 'tools'.",
                "tool_choice.function.name",
            )
        if self.parallel_tool_calls is not None and not self.tools:
            raise invalid("'parallel_tool_calls' is only allowed when 'tools' are given.", "parallel_tool_calls")

    def _check_tool_messages(self) -> None:
        called: set[str] = set()
        for index, message in enumerate(self.messages):
            for call in message.tool_calls or []:
                called.add(call.id)
            if message.role == "tool" and message.tool_call_id not in called:
                raise invalid(
                    f"This tool message answers {show(message.tool_call_id)}, which no earlier assistant message "
                    "called (its 'tool_calls' must have that id).",
                    f"messages[{index}].tool_call_id",
                )


# --- completions -----------------------------------------------------------------------------


def _prompt(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        if len(value) > MAX_PROMPTS:
            raise invalid(f"'prompt' takes at most {MAX_PROMPTS} prompts.")
        return value
    if isinstance(value, list) and value and all(_is_int(t) or isinstance(t, list) for t in value):
        raise invalid("Token-array prompts are not supported; send text.")
    raise invalid("'prompt' must be a string or a non-empty array of strings.")


Prompt = Annotated[
    list[str],
    BeforeValidator(_prompt),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": MAX_PROMPTS}]}
    ),
]


class CompletionRequest(Sampling):
    """``POST /v1/completions``."""

    prompt: Prompt
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _supported(self):
        if self.suffix is not None:
            raise invalid("'suffix' is not supported by this server.", "suffix")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise invalid("'best_of' is not supported unless it equals 'n'.", "best_of")
        if self.logprobs is not None and self.echo:
            raise invalid("'logprobs' together with 'echo' is not supported by this server.", "logprobs")
        return self


# --- embeddings ------------------------------------------------------------------------------


def _embedding_input(value: Any) -> Any:
    token_arrays = "Token-array inputs are not supported here; send the text as a string or an array of strings."
    if isinstance(value, str):
        if not value:
            raise invalid("'input' must not contain empty strings.")
        return [value]
    if not isinstance(value, list):
        raise invalid("'input' must be a string or an array of strings.")
    if not value:
        raise invalid("'input' must not be an empty array.")
    if all(_is_int(t) for t in value) or all(isinstance(t, list) for t in value):
        raise invalid(token_arrays)
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise invalid(f"'input' takes at most {MAX_EMBEDDING_INPUTS} items, got {len(value)}; split the request.")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise invalid(f"Each item of 'input' must be a string, got {show(item)}.", f"[{index}]")
        if not item:
            raise invalid("'input' must not contain empty strings.", f"[{index}]")
    return value


EmbeddingInput = Annotated[
    list[str],
    BeforeValidator(_embedding_input),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                 "maxItems": MAX_EMBEDDING_INPUTS},
            ]
        }
    ),
]  # fmt: skip


class EmbeddingRequest(Strict):
    """``POST /v1/embeddings``."""

    model: ModelName
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


__all__ = [
    "CHAT_ROLES",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "EmbeddingRequest",
    "ResponseFormat",
    "Tool",
]

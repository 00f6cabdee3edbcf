"""Validation of OpenAI request bodies into typed requests.

Each check raises :class:`~gpucloud.openai_errors.ApiError` naming the offending ``param``,
so a client sees exactly what to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gpucloud.jsonbody import parse_json_object
from gpucloud.openai_errors import ApiError, invalid_request

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_N = 8
MAX_STOP_SEQUENCES = 4
# Accepted for compatibility with OpenAI clients; they do not change what is generated.
ACCEPTED_AND_IGNORED = {"frequency_penalty", "presence_penalty", "logit_bias", "metadata", "store", "service_tier"}
CHAT_PARAMS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop",
    "seed", "user", "stream", "stream_options", "logprobs",
} | ACCEPTED_AND_IGNORED  # fmt: skip


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


@dataclass(kw_only=True)
class ChatRequest(GenerationRequest):
    messages: list[dict]


def parse_json_body(body: bytes) -> dict:
    """The body as a JSON object, within gpucloud.jsonbody's bounds (depth, size, numbers, strings)."""
    return parse_json_object(body)


def _show(value) -> str:
    """A client's value in an error message, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional_int(data: dict, name: str, minimum: int, maximum: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise invalid_request(f"'{name}' must be an integer, got {_show(value)}.", param=name)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise invalid_request(f"'{name}' must be {bound}, got {value}.", param=name)
    return value


def _number(data: dict, name: str, default: float, minimum: float, maximum: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise invalid_request(f"'{name}' must be a number, got {_show(value)}.", param=name)
    if not minimum <= value <= maximum:
        raise invalid_request(f"'{name}' must be between {minimum} and {maximum}, got {value}.", param=name)
    return float(value)


def _content_text(content, param: str, role: str) -> str:
    if content is None and role == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for index, part in enumerate(content):
            part_param = f"{param}[{index}]"
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid_request(
                    "Only text content parts ({'type': 'text', 'text': ...}) are supported.", param=part_param
                )
            if not isinstance(part.get("text"), str):
                raise invalid_request("A text content part needs a string 'text'.", param=f"{part_param}.text")
            parts.append(part["text"])
        return "\n".join(parts)
    raise invalid_request("'content' must be a string or a list of text parts.", param=param)


def _messages(data: dict) -> list[dict]:
    messages = data.get("messages")
    if messages is None:
        raise invalid_request("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' must be a non-empty array of message objects.", param="messages")
    cleaned = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid_request("Each message must be an object with 'role' and 'content'.", param=param)
        role = message.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise invalid_request(
                f"Invalid role {_show(role)}; use one of {', '.join(sorted(CHAT_ROLES))}.", param=f"{param}.role"
            )
        if "content" not in message:
            raise invalid_request("Missing required parameter: 'content'.", param=f"{param}.content")
        cleaned.append({"role": role, "content": _content_text(message["content"], f"{param}.content", role)})
    return cleaned


def _stop(data: dict) -> list[str]:
    stop = data.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid_request("'stop' must be a string or an array of strings.", param="stop")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise invalid_request(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
    if any(s == "" for s in stop):
        raise invalid_request("Stop sequences must not be empty.", param="stop")
    return stop


@dataclass(kw_only=True)
class CompletionRequest(GenerationRequest):
    prompts: list[str]
    max_tokens: int = 16  # the legacy endpoint's default
    echo: bool = False


COMPLETION_PARAMS = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "user", "stream",
    "stream_options", "echo", "logprobs", "best_of", "suffix",
} | ACCEPTED_AND_IGNORED  # fmt: skip
MAX_PROMPTS = 16


def _model(data: dict) -> str:
    model = data.get("model")
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("'model' must be a non-empty string.", param="model")
    return model


def _reject_unknown(data: dict, known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise invalid_request(f"Unrecognized request argument supplied: {unknown[0]}.", param=unknown[0])


def _stream(data: dict) -> tuple[bool, bool]:
    """``stream`` and ``stream_options.include_usage``."""
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    include_usage = False
    stream_options = data.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise invalid_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
        if not isinstance(stream_options, dict) or not set(stream_options) <= {"include_usage"}:
            raise invalid_request("'stream_options' takes only 'include_usage'.", param="stream_options")
        include_usage = stream_options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise invalid_request("'include_usage' must be a boolean.", param="stream_options.include_usage")
    return stream, include_usage


def _sampling(data: dict) -> dict:
    """The sampling parameters both endpoints share."""
    for penalty in ("frequency_penalty", "presence_penalty"):
        _number(data, penalty, 0.0, -2.0, 2.0)
    seed = data.get("seed")
    if seed is not None and not _is_int(seed):
        raise invalid_request("'seed' must be an integer.", param="seed")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid_request("'user' must be a string.", param="user")
    return {
        "temperature": _number(data, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(data, "top_p", 1.0, 0.0, 1.0),
        "n": _optional_int(data, "n", 1, MAX_N) or 1,
        "stop": _stop(data),
        "seed": seed,
        "user": user,
    }


def _prompts(data: dict) -> list[str]:
    prompt = data.get("prompt")
    if prompt is None:
        raise invalid_request("Missing required parameter: 'prompt'.", param="prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > MAX_PROMPTS:
            raise invalid_request(f"'prompt' takes at most {MAX_PROMPTS} prompts.", param="prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) or isinstance(t, list) for t in prompt):
        raise invalid_request("Token-array prompts are not supported; send text.", param="prompt")
    raise invalid_request("'prompt' must be a string or a non-empty array of strings.", param="prompt")


def parse_completion_request(body: bytes) -> CompletionRequest:
    """Validate a ``POST /v1/completions`` body."""
    data = parse_json_body(body)
    _reject_unknown(data, COMPLETION_PARAMS)
    model = _model(data)
    prompts = _prompts(data)
    max_tokens = _optional_int(data, "max_tokens", 1)
    stream, include_usage = _stream(data)
    echo = data.get("echo", False)
    if not isinstance(echo, bool):
        raise invalid_request("'echo' must be a boolean.", param="echo")
    if data.get("logprobs") is not None:
        raise invalid_request("'logprobs' is not supported by this server.", param="logprobs")
    if data.get("suffix") is not None:
        raise invalid_request("'suffix' is not supported by this server.", param="suffix")
    sampling = _sampling(data)
    best_of = data.get("best_of")
    if best_of is not None and best_of != sampling["n"]:
        raise invalid_request("'best_of' is not supported unless it equals 'n'.", param="best_of")
    return CompletionRequest(
        model=model,
        prompts=prompts,
        max_tokens=16 if max_tokens is None else max_tokens,
        stream=stream,
        include_usage=include_usage,
        echo=echo,
        **sampling,
    )


def parse_chat_request(body: bytes) -> ChatRequest:
    """Validate a ``POST /v1/chat/completions`` body."""
    data = parse_json_body(body)
    _reject_unknown(data, CHAT_PARAMS)
    model = _model(data)
    messages = _messages(data)
    max_tokens = _optional_int(data, "max_tokens", 1)
    max_completion_tokens = _optional_int(data, "max_completion_tokens", 1)
    if max_tokens is not None and max_completion_tokens is not None and max_tokens != max_completion_tokens:
        raise invalid_request(
            "Set either 'max_tokens' or 'max_completion_tokens', not both with different values.",
            param="max_completion_tokens",
        )
    stream, include_usage = _stream(data)
    if data.get("logprobs") not in (None, False):
        raise invalid_request("'logprobs' is not supported by this server.", param="logprobs")
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens if max_tokens is not None else max_completion_tokens,
        stream=stream,
        include_usage=include_usage,
        **_sampling(data),
    )


EMBEDDING_PARAMS = {"model", "input", "encoding_format", "dimensions", "user"}
MAX_EMBEDDING_INPUTS = 2048
ENCODING_FORMATS = ("float", "base64")


@dataclass
class EmbeddingRequest:
    model: str
    inputs: list[str]
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None


def _embedding_inputs(data: dict) -> list[str]:
    value = data.get("input")
    if value is None:
        raise invalid_request("Missing required parameter: 'input'.", param="input")
    token_arrays = "Token-array inputs are not supported here; send the text as a string or an array of strings."
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list):
        if not value:
            raise invalid_request("'input' must not be an empty array.", param="input")
        if all(_is_int(t) for t in value) or all(isinstance(t, list) for t in value):
            raise invalid_request(token_arrays, param="input")
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise invalid_request(
                f"'input' takes at most {MAX_EMBEDDING_INPUTS} items, got {len(value)}; split the request.",
                param="input",
            )
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid_request(
                    f"Each item of 'input' must be a string, got {_show(item)}.", param=f"input[{index}]"
                )
        inputs = value
    else:
        raise invalid_request("'input' must be a string or an array of strings.", param="input")
    for index, text in enumerate(inputs):
        if not text:
            param = "input" if isinstance(value, str) else f"input[{index}]"
            raise invalid_request("'input' must not contain empty strings.", param=param)
    return inputs


def parse_embedding_request(body: bytes) -> EmbeddingRequest:
    """Validate a ``POST /v1/embeddings`` body."""
    data = parse_json_body(body)
    _reject_unknown(data, EMBEDDING_PARAMS)
    model = _model(data)
    inputs = _embedding_inputs(data)
    encoding_format = data.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise invalid_request(
            f"'encoding_format' must be 'float' or 'base64', got {_show(encoding_format)}.",
            param="encoding_format",
        )
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid_request("'user' must be a string.", param="user")
    return EmbeddingRequest(
        model=model,
        inputs=inputs,
        encoding_format=encoding_format,
        dimensions=_optional_int(data, "dimensions", 1),
        user=user,
    )


__all__ = [
    "ApiError",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "parse_chat_request",
    "parse_completion_request",
    "parse_embedding_request",
    "parse_json_body",
]

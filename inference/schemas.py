"""Request models of the OpenAI-compatible API (pydantic), as the API documentation describes them.

TEMPORARY (metrics branch): a minimal stand-in with today's fields (see ``inference.validation``),
so that the OpenAPI schema has request bodies for ``/v1``. The OpenAI-surface work replaces this
module with the models the views validate with; ``gpucloud.openapi`` reads only the three class
names and their ``model_json_schema()``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 8


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] = Field(description="Text, or text parts.")
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, description="A model id or alias from GET /v1/models.")]
    temperature: Annotated[float, Field(ge=0, le=2)] | None = 1.0
    top_p: Annotated[float, Field(ge=0, le=1)] | None = 1.0
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = 1
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = None
    seed: int | None = None
    user: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = Field(None, description="Only with stream: true.")
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = Field(None, description="Accepted, ignored.")
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = Field(None, description="Accepted, ignored.")


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=16)]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    echo: bool | None = False


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1)]
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

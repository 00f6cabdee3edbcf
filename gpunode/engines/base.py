"""What every engine receives and yields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from nodeprotocol.jobs import EmbeddingJob, GenerationJob

__all__ = ["EmbeddingJob", "Engine", "EngineRefused", "EngineUnavailable", "GenerationJob", "TokenEvent"]


@dataclass(frozen=True)
class TokenEvent:
    """A token of choice ``index``, or with ``text=None`` the end of that choice: its natural end
    ("stop") unless the engine gives another ``finish_reason`` (an upstream's "length", "tool_calls").

    ``logprobs``: the log probabilities of the tokens in ``text`` (when the job asks for them), each
    ``{"token", "logprob", "top": [[token, logprob], ...]}``; their tokens join to ``text``.
    ``tool_call``: a piece of a tool call instead of text, ``{"index", "arguments"}`` with ``id`` and
    ``name`` on the call's first piece.
    """

    index: int
    text: str | None
    finish_reason: str | None = None
    logprobs: list[dict] | None = None
    tool_call: dict | None = None


class EngineUnavailable(Exception):
    """The engine cannot serve (missing dependencies, upstream down, model failed to load).

    The message is shown to operators as the replica's failure reason, and to clients in an
    OpenAI-shaped error: it must say what is wrong and what to do. ``code`` is that error's code;
    ``status`` the HTTP status the client gets (502: the fault is on our side of the API).
    """

    code = "engine_unavailable"
    status = 502


class EngineRefused(EngineUnavailable):
    """The engine cannot do what this request asks (a schema it cannot enforce): the client's to fix."""

    code = "unsupported_by_engine"
    status = 400


class Engine(Protocol):
    """An engine instance serves one deployment on one worker: ``config`` is the deployment's
    ``engine_config``. Instances are cached per (engine, config) and shared by concurrent jobs,
    so per-request state lives on the job, never on the engine."""

    # The same job (with its seed) gives the same text, so another worker can take over mid-stream.
    deterministic: bool
    # Optional, False when absent: the engine stops each choice at max_tokens itself (counting real
    # tokens), so the runner does not cut it by counting events.
    applies_max_tokens: bool

    def __init__(self, config: dict) -> None: ...

    async def prepare(self) -> None:
        """Load the model or check the upstream, once, before the replica serves.
        Raises EngineUnavailable with a clear reason."""
        ...

    def generate(self, job: GenerationJob) -> AsyncIterator[TokenEvent]:
        """Yield the tokens of all ``job.n`` choices, interleaved, skipping ``job.finished`` ones.
        An engine that knows the true token counts (an upstream server's usage) sets
        ``job.reported_usage``."""
        ...

    async def embed(self, texts: list[str], *, model: str = "") -> tuple[list[list[float]], int]:
        """Embedding vectors for ``texts``, and the prompt tokens they took. ``model`` is the
        platform's model id, for engines whose config does not name one."""
        ...

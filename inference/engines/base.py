"""What every engine receives and yields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class GenerationJob:
    """One request's generation work, as the worker receives it (plain data, no database rows)."""

    request_id: str
    model: str
    parameters_billion: float
    gpu_profile: str
    prompt: str
    prompt_tokens: int
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Whether the client gave ``seed`` and ``max_tokens`` (the view fills them in otherwise): an
    # engine that forwards the request forwards only what the client asked for.
    seed_given: bool = True
    max_tokens_given: bool = True
    # /v1/completions with several prompts: choice i answers prompts[i // (n // len(prompts))].
    prompts: list[str] = field(default_factory=list)
    # /v1/chat/completions: the validated messages ({"role", "content": str}), for engines that
    # forward them (``prompt`` is their flattened text).
    messages: list[dict] = field(default_factory=list)
    # Characters of each choice the client already has (a re-dispatched request): an engine that
    # reproduces them may produce them without pacing.
    fast_forward: list[int] = field(default_factory=list)
    # The deployment's engine settings (e.g. the upstream URL of the "openai" engine).
    engine_config: dict = field(default_factory=dict)
    # Set by engines that know the real usage: {"prompt_tokens": …, "completion_tokens": …}.
    reported_usage: dict | None = None
    # Choices that are complete; engines skip them (the runner ends a choice on stop or length).
    finished: set[int] = field(default_factory=set)

    def prompt_for(self, index: int) -> str:
        if not self.prompts:
            return self.prompt
        return self.prompts[index // (self.n // len(self.prompts))]

    @classmethod
    def from_dict(cls, data: dict) -> GenerationJob:
        skip = {"finished", "reported_usage"}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in skip})


@dataclass
class EmbeddingJob:
    """One embeddings request, as the worker receives it."""

    request_id: str
    model: str
    texts: list[str]
    engine_config: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> EmbeddingJob:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TokenEvent:
    """A token of choice ``index``, or with ``text=None`` the end of that choice: its natural end
    ("stop") unless the engine gives another ``finish_reason`` (an upstream's "length")."""

    index: int
    text: str | None
    finish_reason: str | None = None


class EngineUnavailable(Exception):
    """The engine cannot serve (missing dependencies, upstream down, model failed to load).

    The message is shown to operators as the replica's failure reason, and to clients in an
    OpenAI-shaped error: it must say what is wrong and what to do. ``code`` is that error's code;
    ``status`` the HTTP status the client gets (502: the fault is on our side of the API).
    """

    code = "engine_unavailable"
    status = 502


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

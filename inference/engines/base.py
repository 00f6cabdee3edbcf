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
    # /v1/completions with several prompts: choice i answers prompts[i // (n // len(prompts))].
    prompts: list[str] = field(default_factory=list)
    # Characters of each choice the client already has (a re-dispatched request): an engine that
    # reproduces them may produce them without pacing.
    fast_forward: list[int] = field(default_factory=list)
    # Choices that are complete; engines skip them (the runner ends a choice on stop or length).
    finished: set[int] = field(default_factory=set)

    def prompt_for(self, index: int) -> str:
        if not self.prompts:
            return self.prompt
        return self.prompts[index // (self.n // len(self.prompts))]

    @classmethod
    def from_dict(cls, data: dict) -> GenerationJob:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "finished"})


@dataclass(frozen=True)
class TokenEvent:
    """A token of choice ``index``, or with ``text=None`` the natural end of that choice."""

    index: int
    text: str | None


class Engine(Protocol):
    def generate(self, job: GenerationJob) -> AsyncIterator[TokenEvent]:
        """Yield the tokens of all ``job.n`` choices, interleaved, skipping ``job.finished`` ones."""
        ...

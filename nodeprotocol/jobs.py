"""The jobs the platform hands a node: plain data, no database rows, no secrets."""

from __future__ import annotations

import sys
from array import array
from dataclasses import asdict, dataclass, field


@dataclass
class GenerationJob:
    """One request's generation work (chat or completions), as the node receives it."""

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
    # Whether the client gave ``seed`` and ``max_tokens`` (the platform fills them in otherwise):
    # an engine that forwards the request forwards only what the client asked for.
    seed_given: bool = True
    max_tokens_given: bool = True
    # /v1/completions with several prompts: choice i answers prompts[i // (n // len(prompts))].
    prompts: list[str] = field(default_factory=list)
    # /v1/chat/completions: the validated messages ({"role", "content": str | None}, with
    # ``tool_calls``, ``tool_call_id`` or ``name`` where given), for engines that forward them
    # (``prompt`` is their flattened text).
    messages: list[dict] = field(default_factory=list)
    # Optional features (nodeprotocol.structured.ENGINE_FEATURES says which engine honours which);
    # None or empty when the client did not ask, so that an engine forwarding the request forwards
    # only what was asked. /v1/completions' ``logprobs: k`` arrives as logprobs=True, top_logprobs=k.
    tools: list[dict] = field(default_factory=list)
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # Characters of each choice the client already has (a job dispatched again after a node
    # failure): an engine that reproduces them may produce them without pacing.
    fast_forward: list[int] = field(default_factory=list)
    # Node-side only, never sent: set by engines that know the real usage, and the choices that
    # are complete (engines skip them; the runner ends a choice on stop or length).
    reported_usage: dict | None = None
    finished: set[int] = field(default_factory=set)

    WIRE_EXCLUDED = frozenset({"reported_usage", "finished"})

    def prompt_for(self, index: int) -> str:
        if not self.prompts:
            return self.prompt
        return self.prompts[index // (self.n // len(self.prompts))]

    def to_wire(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.WIRE_EXCLUDED}

    @classmethod
    def from_wire(cls, data: dict) -> GenerationJob:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in cls.WIRE_EXCLUDED})


@dataclass
class EmbeddingJob:
    """One embeddings request, as the node receives it."""

    request_id: str
    model: str
    texts: list[str]

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict) -> EmbeddingJob:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def pack_vectors(vectors: list[list[float]]) -> bytes:
    """Vectors as little-endian float32 bytes, one after the other (OpenAI's base64 layout)."""
    packed = array("f")
    for vector in vectors:
        packed.extend(vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_floats(data: bytes) -> list[float]:
    """Little-endian float32 bytes as floats."""
    values = array("f", data)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()

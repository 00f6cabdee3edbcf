"""Engine-agnostic generation: max_tokens, stop sequences and usage, around any engine.

Usage is counted here (a token event is a token) unless the engine reports the true counts in
``job.reported_usage``, as the "openai" engine does with its upstream server's usage.

The same code shapes streamed and non-streamed output (a non-streamed reply is the concatenation
of the deltas), so both give the same text for the same deterministic request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from gpunode.engines.base import Engine, GenerationJob


class StopMatcher:
    """Cuts a choice's text at the first stop sequence, holding back text that may start one."""

    def __init__(self, stop: list[str]) -> None:
        self.stop = stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return the text that is safe to emit, and whether a stop sequence was hit."""
        self.buffer += text
        positions = [p for p in (self.buffer.find(s) for s in self.stop) if p != -1]
        if positions:
            out, self.buffer = self.buffer[: min(positions)], ""
            return out, True
        if self.hold == 0:
            out, self.buffer = self.buffer, ""
            return out, False
        out, self.buffer = self.buffer[: -self.hold], self.buffer[-self.hold :]
        return out, False

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


@dataclass
class GenerationResult:
    prompt_tokens: int
    completion_tokens: int
    finish_reasons: dict[int, str]


# emit(index, text, finish_reason): text to append to choice ``index``, or its end.
Emit = Callable[[int, str, str | None], Awaitable[None]]


async def generate(engine: Engine, job: GenerationJob, emit: Emit) -> GenerationResult:
    """Run ``job`` on ``engine``, calling ``emit`` for every piece of text and every choice's end."""
    matchers = [StopMatcher(job.stop) for _ in range(job.n)]
    # An engine that applies max_tokens itself (an upstream server) counts real tokens: let it end
    # each choice, so that its usage, which comes last, is read too.
    count_limit = not getattr(engine, "applies_max_tokens", False)
    produced = [0] * job.n
    reasons: dict[int, str] = {}

    async def finish(index: int, reason: str, text: str = "") -> None:
        text += matchers[index].flush()
        job.finished.add(index)
        reasons[index] = reason
        await emit(index, text, reason)

    async with aclosing(engine.generate(job)) as events:
        async for event in events:
            index = event.index
            if index in reasons:
                continue
            if event.text is None:
                await finish(index, event.finish_reason or "stop")
            else:
                produced[index] += 1
                text, stopped = matchers[index].feed(event.text)
                if stopped:
                    job.finished.add(index)
                    reasons[index] = "stop"
                    await emit(index, text, "stop")
                elif count_limit and produced[index] >= job.max_tokens:
                    await finish(index, "length", text)
                elif text:
                    await emit(index, text, None)
            if len(reasons) == job.n:
                break
    for index in range(job.n):  # an engine that ended without closing every choice
        if index not in reasons:
            await finish(index, "stop")
    # An engine that knows the true counts (an upstream server's usage) overrides ours.
    usage = job.reported_usage or {}
    return GenerationResult(
        prompt_tokens=usage.get("prompt_tokens", job.prompt_tokens),
        completion_tokens=usage.get("completion_tokens", sum(produced)),
        finish_reasons=reasons,
    )

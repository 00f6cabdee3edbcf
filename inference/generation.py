"""Engine-agnostic generation: max_tokens, stop sequences and usage, around any engine.

The same code shapes streamed and non-streamed output (a non-streamed reply is the concatenation
of the deltas), so both give the same text for the same deterministic request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from inference.engines.base import Engine, GenerationJob


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
    completion_tokens: int
    finish_reasons: dict[int, str]


# emit(index, text, finish_reason): text to append to choice ``index``, or its end.
Emit = Callable[[int, str, str | None], Awaitable[None]]


async def generate(engine: Engine, job: GenerationJob, emit: Emit) -> GenerationResult:
    """Run ``job`` on ``engine``, calling ``emit`` for every piece of text and every choice's end."""
    matchers = [StopMatcher(job.stop) for _ in range(job.n)]
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
                await finish(index, "stop")
            else:
                produced[index] += 1
                text, stopped = matchers[index].feed(event.text)
                if stopped:
                    job.finished.add(index)
                    reasons[index] = "stop"
                    await emit(index, text, "stop")
                elif produced[index] >= job.max_tokens:
                    await finish(index, "length", text)
                elif text:
                    await emit(index, text, None)
            if len(reasons) == job.n:
                break
    for index in range(job.n):  # an engine that ended without closing every choice
        if index not in reasons:
            await finish(index, "stop")
    return GenerationResult(completion_tokens=sum(produced), finish_reasons=reasons)

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


# emit(index, text, finish_reason, extra): text to append to choice ``index``, or its end; ``extra``
# (only when there is any) holds the protocol's optional event fields: "lp" (log probabilities of
# the tokens of ``text``, joining to it) and "tc" (tool-call pieces).
Emit = Callable[..., Awaitable[None]]


class LogprobAligner:
    """Hands out a choice's log-probability entries as the text they cover is emitted.

    Stop sequences hold text back and cut it anywhere, so an entry goes out with the emission that
    completes its token; at the choice's end a token cut by a stop sequence goes out cut the same
    way. The tokens sent for a choice therefore spell exactly the text sent.
    """

    def __init__(self) -> None:
        self.pending: list[dict] = []
        self.emitted = 0  # characters of text emitted
        self.covered = 0  # characters covered by entries handed out

    def add(self, entries: list[dict] | None) -> None:
        if entries:
            self.pending.extend(entries)

    def take(self, text: str, final: bool = False) -> list[dict]:
        self.emitted += len(text)
        out = []
        while self.pending and self.covered + len(self.pending[0]["token"]) <= self.emitted:
            entry = self.pending.pop(0)
            self.covered += len(entry["token"])
            out.append(entry)
        if final and self.pending and self.covered < self.emitted:
            entry = {**self.pending[0], "token": self.pending[0]["token"][: self.emitted - self.covered]}
            self.covered = self.emitted
            out.append(entry)
        if final:
            self.pending = []
        return out


async def generate(engine: Engine, job: GenerationJob, emit: Emit) -> GenerationResult:
    """Run ``job`` on ``engine``, calling ``emit`` for every piece of text and every choice's end."""
    matchers = [StopMatcher(job.stop) for _ in range(job.n)]
    aligners = [LogprobAligner() for _ in range(job.n)] if job.logprobs else None
    # An engine that applies max_tokens itself (an upstream server) counts real tokens: let it end
    # each choice, so that its usage, which comes last, is read too.
    count_limit = not getattr(engine, "applies_max_tokens", False)
    produced = [0] * job.n
    reasons: dict[int, str] = {}

    async def send(index: int, text: str, reason: str | None, tool_calls: list[dict] | None = None) -> None:
        extra = {}
        if aligners is not None:
            entries = aligners[index].take(text, final=reason is not None)
            if entries:
                extra["lp"] = entries
        if tool_calls:
            extra["tc"] = tool_calls
        if extra:
            await emit(index, text, reason, extra)
        else:
            await emit(index, text, reason)

    async def finish(index: int, reason: str, text: str = "") -> None:
        text += matchers[index].flush()
        job.finished.add(index)
        reasons[index] = reason
        await send(index, text, reason)

    async with aclosing(engine.generate(job)) as events:
        async for event in events:
            index = event.index
            if index in reasons:
                continue
            if event.text is None:
                await finish(index, event.finish_reason or "stop")
            elif event.tool_call is not None:
                produced[index] += 1
                await send(index, "", None, [event.tool_call])
                if count_limit and produced[index] >= job.max_tokens:
                    await finish(index, "length")
            else:
                produced[index] += 1
                if aligners is not None:
                    aligners[index].add(event.logprobs)
                text, stopped = matchers[index].feed(event.text)
                if stopped:
                    job.finished.add(index)
                    reasons[index] = "stop"
                    await send(index, text, "stop")
                elif count_limit and produced[index] >= job.max_tokens:
                    await finish(index, "length", text)
                elif text:
                    await send(index, text, None)
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

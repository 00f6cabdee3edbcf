"""gpunode.generation: stop sequences, max_tokens and usage around an engine."""

import asyncio
from dataclasses import dataclass, field

import pytest

from gpunode.engines import GenerationJob, SimulatedEngine
from gpunode.generation import GenerationResult, StopMatcher, generate
from nodeprotocol.tokens import count_tokens


@pytest.fixture(autouse=True)
def instant(monkeypatch):
    monkeypatch.setenv("SIMULATED_ENGINE_INSTANT", "true")


# --- StopMatcher ----------------------------------------------------------------------------


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    emitted = ""
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        emitted += text
        if stopped:
            return emitted, True
    return emitted + matcher.flush(), False


def test_it_passes_text_through_without_stops():
    matcher = StopMatcher([])

    assert matcher.feed("Hello") == ("Hello", False)
    assert matcher.feed(" world") == (" world", False)
    assert matcher.flush() == ""


def test_it_cuts_at_a_stop_within_one_piece():
    assert StopMatcher(["END"]).feed("one two END three") == ("one two ", True)


def test_it_cuts_at_a_stop_split_across_pieces():
    assert feed_all(StopMatcher(["END"]), ["one E", "N", "D three"]) == ("one ", True)
    assert feed_all(StopMatcher(["\n\n"]), ["line", "\n", "\n", "next"]) == ("line", True)


def test_it_holds_back_a_partial_match():
    matcher = StopMatcher(["STOP"])

    text, stopped = matcher.feed("go ST")

    assert not stopped
    assert "go ".startswith(text)
    assert "S" not in text
    # The partial match turned out not to be a stop: the held text comes out, in order.
    rest, stopped = matcher.feed("ART now")
    assert not stopped
    assert text + rest + matcher.flush() == "go START now"


def test_it_never_emits_the_start_of_a_stop_that_then_completes():
    for split in range(1, len("abcSTOPdef")):
        whole = "abcSTOPdef"
        assert feed_all(StopMatcher(["STOP"]), [whole[:split], whole[split:]]) == ("abc", True), split


def test_it_handles_multiple_stops():
    assert feed_all(StopMatcher(["END", "."]), ["Hello", " world", ".", " More"]) == ("Hello world", True)
    assert feed_all(StopMatcher(["END", "."]), ["Hello", " E", "ND"]) == ("Hello ", True)


def test_it_stops_at_the_earliest_stop():
    # The later-listed stop occurs first in the text.
    assert StopMatcher(["world", "lo"]).feed("hello world") == ("hel", True)
    assert feed_all(StopMatcher(["world", "lo"]), ["hel", "lo wor", "ld"]) == ("hel", True)


def test_it_flushes_held_text_at_the_end():
    matcher = StopMatcher(["LONGSTOP"])

    text, stopped = matcher.feed("abc")

    assert (text, stopped) == ("", False)
    assert matcher.flush() == "abc"
    assert matcher.flush() == ""


# --- generate() -----------------------------------------------------------------------------


@dataclass
class Run:
    result: GenerationResult
    texts: dict[int, str] = field(default_factory=dict)
    deltas: list[tuple[int, str, str | None]] = field(default_factory=list)


def job(**changes) -> GenerationJob:
    fields = {
        "request_id": "req_test",
        "model": "llama-3.1-8b-instruct",
        "parameters_billion": 8.03,
        "gpu_profile": "A100-80GB",
        "prompt": "user: Tell me about GPUs.",
        "prompt_tokens": 12,
        "max_tokens": 10_000,
        "temperature": 0.0,
        **changes,
    }
    return GenerationJob(**fields)


def run(generation_job: GenerationJob) -> Run:
    deltas = []

    async def emit(index: int, text: str, finish_reason: str | None) -> None:
        deltas.append((index, text, finish_reason))

    result = asyncio.run(generate(SimulatedEngine(), generation_job, emit))
    outcome = Run(result=result, deltas=deltas)
    for index, text, _ in deltas:
        outcome.texts[index] = outcome.texts.get(index, "") + text
    return outcome


def test_it_ends_naturally_with_stop():
    outcome = run(job(seed=11))

    assert outcome.result.finish_reasons == {0: "stop"}
    assert outcome.texts[0].endswith(".")
    # Every choice ends exactly once, with its last event.
    assert [d for d in outcome.deltas if d[2] is not None] == [outcome.deltas[-1]]


def test_it_counts_completion_tokens_as_the_platform_does():
    outcome = run(job(seed=11))

    assert outcome.result.completion_tokens == count_tokens(outcome.texts[0])
    assert outcome.result.completion_tokens > 0


@pytest.mark.parametrize("max_tokens", [1, 5, 11])
def test_it_stops_at_max_tokens(max_tokens):
    outcome = run(job(seed=11, max_tokens=max_tokens))

    assert outcome.result.finish_reasons == {0: "length"}
    assert outcome.result.completion_tokens == max_tokens
    assert count_tokens(outcome.texts[0]) == max_tokens
    assert run(job(seed=11)).texts[0].startswith(outcome.texts[0])


def test_it_stops_at_a_stop_sequence():
    full = run(job(seed=11)).texts[0]
    # A stop spanning a token boundary, from the middle of the text.
    middle = len(full) // 2
    stop = full[middle : middle + 5]

    outcome = run(job(seed=11, stop=[stop]))

    assert outcome.result.finish_reasons == {0: "stop"}
    assert outcome.texts[0] == full[: full.index(stop)]
    assert stop not in outcome.texts[0]
    assert outcome.result.completion_tokens < count_tokens(full)


def test_it_releases_held_back_text_when_no_stop_comes():
    full = run(job(seed=11)).texts[0]
    never = "no such sequence"

    natural = run(job(seed=11, stop=[never]))
    cut = run(job(seed=11, stop=[never], max_tokens=7))

    assert natural.texts[0] == full
    assert natural.result.finish_reasons == {0: "stop"}
    assert cut.texts[0] == run(job(seed=11, max_tokens=7)).texts[0]
    assert cut.result.finish_reasons == {0: "length"}


def test_it_gives_the_earliest_of_several_stops():
    full = run(job(seed=11)).texts[0]
    late, early = full[-6:-1], full[len(full) // 3 : len(full) // 3 + 4]
    assert full.index(early) < full.index(late)

    outcome = run(job(seed=11, stop=[late, early]))

    assert outcome.texts[0] == full[: full.index(early)]


def test_it_generates_n_choices():
    outcome = run(job(seed=11, n=2))

    assert set(outcome.texts) == {0, 1}
    assert outcome.result.finish_reasons == {0: "stop", 1: "stop"}
    assert outcome.texts[0] != outcome.texts[1]
    assert outcome.result.completion_tokens == count_tokens(outcome.texts[0]) + count_tokens(outcome.texts[1])


def test_it_limits_each_of_n_choices():
    outcome = run(job(seed=11, n=2, max_tokens=4))

    assert outcome.result.finish_reasons == {0: "length", 1: "length"}
    assert outcome.result.completion_tokens == 8
    assert count_tokens(outcome.texts[0]) == count_tokens(outcome.texts[1]) == 4


def test_it_gives_the_same_text_on_every_run():
    first = run(job(seed=11, n=2, stop=["cloud"]))
    second = run(job(seed=11, n=2, stop=["cloud"]))

    assert first.texts == second.texts
    assert first.result == second.result

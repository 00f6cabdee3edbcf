"""gpunode.engines.simulated: deterministic, natural-ending, top_p-aware and paced output."""

import asyncio
import time
from contextlib import aclosing

import pytest

from gpunode.engines import GenerationJob, TokenEvent, get_engine
from gpunode.engines.simulated import MAX_LENGTH, MIN_LENGTH, VOCABULARY, SimulatedEngine
from nodeprotocol.gpus import GPU_PROFILES


@pytest.fixture
def instant(monkeypatch):
    monkeypatch.setenv("SIMULATED_ENGINE_INSTANT", "true")


def job(**changes) -> GenerationJob:
    fields = {
        "request_id": "req_test",
        "model": "llama-3.1-8b-instruct",
        "parameters_billion": 8.03,
        "gpu_profile": "A100-80GB",
        "prompt": "user: Tell me about GPUs.",
        "prompt_tokens": 12,
        "max_tokens": 1000,
        "temperature": 1.0,
        "seed": None,
        **changes,
    }
    return GenerationJob(**fields)


def events(generation_job: GenerationJob) -> list[TokenEvent]:
    async def collect():
        return [event async for event in SimulatedEngine().generate(generation_job)]

    return asyncio.run(collect())


def texts(generation_job: GenerationJob) -> dict[int, str]:
    out: dict[int, str] = {}
    for event in events(generation_job):
        if event.text is not None:
            out[event.index] = out.get(event.index, "") + event.text
    return out


def words(text: str) -> list[str]:
    return text.replace(".", " ").split()


def test_it_is_registered():
    assert isinstance(get_engine("simulated"), SimulatedEngine)


def test_it_is_deterministic_at_temperature_zero(instant):
    assert texts(job(temperature=0)) == texts(job(temperature=0))


def test_it_is_deterministic_for_a_seed(instant):
    assert texts(job(seed=7)) == texts(job(seed=7))


def test_it_differs_for_different_seeds(instant):
    assert texts(job(seed=1)) != texts(job(seed=2))


def test_it_differs_for_different_prompts(instant):
    assert texts(job(seed=1, prompt="user: one")) != texts(job(seed=1, prompt="user: two"))


def test_it_is_random_without_seed_or_zero_temperature(instant):
    runs = {texts(job(temperature=1.0))[0] for _ in range(3)}

    assert len(runs) > 1


def test_it_ends_with_a_natural_stop(instant):
    produced = events(job(seed=3))

    assert produced[-1] == TokenEvent(0, None)
    tokens = [event.text for event in produced[:-1]]
    assert None not in tokens
    assert tokens[-1] == "."
    assert tokens[0][0].isupper() and not tokens[0].startswith(" ")
    assert MIN_LENGTH <= len(tokens) <= MAX_LENGTH + 15


def test_it_interleaves_n_choices_and_ends_each(instant):
    produced = events(job(seed=3, n=3))

    ends = [event.index for event in produced if event.text is None]
    assert sorted(ends) == [0, 1, 2]
    by_choice = texts(job(seed=3, n=3))
    assert len(set(by_choice.values())) == 3


def test_it_skips_finished_choices(instant):
    produced = events(job(seed=3, n=2, finished={0}))

    assert {event.index for event in produced} == {1}


def test_it_honours_top_p(instant):
    allowed = set(VOCABULARY[: round(len(VOCABULARY) * 0.1)])
    allowed |= {word[0].upper() + word[1:] for word in allowed}

    narrow = [w for seed in range(5) for w in words(texts(job(seed=seed, top_p=0.1))[0])]
    wide = [w for seed in range(5) for w in words(texts(job(seed=seed, top_p=1.0))[0])]

    assert set(narrow) <= allowed
    assert not set(wide) <= allowed


def test_it_is_paced(monkeypatch):
    monkeypatch.setenv("SIMULATED_ENGINE_INSTANT", "false")
    # A big model and a long prompt: a first-token time long enough to measure.
    paced = job(seed=5, parameters_billion=70.0, prompt_tokens=1000, gpu_profile="H100-80GB")
    profile = GPU_PROFILES["H100-80GB"]
    first_token = profile.time_to_first_token(70.0, 1000)
    interval = 1.0 / profile.tokens_per_second(70.0)
    assert 0.1 < first_token < 0.5

    async def arrivals(count: int) -> list[float]:
        started = time.monotonic()
        times = []
        async with aclosing(SimulatedEngine().generate(paced)) as stream:
            async for _ in stream:
                times.append(time.monotonic() - started)
                if len(times) == count:
                    break
        return times

    times = asyncio.run(arrivals(3))

    assert times[0] >= first_token * 0.95
    assert times[0] < first_token + 1.0
    # Then one token per decode interval.
    assert times[2] - times[0] >= 2 * interval * 0.95


def test_it_is_not_paced_when_instant(instant):
    paced = job(seed=5, parameters_billion=70.0, prompt_tokens=1000, gpu_profile="H100-80GB")
    started = time.monotonic()

    produced = events(paced)

    assert len(produced) > MIN_LENGTH
    assert time.monotonic() - started < 0.1


def test_it_falls_back_to_a_known_profile(instant):
    assert texts(job(seed=9, gpu_profile="no-such-gpu")) == texts(job(seed=9))

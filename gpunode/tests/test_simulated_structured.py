"""gpunode.engines.simulated: tool calls, JSON mode, json_schema, logprobs, penalties and logit_bias."""

import asyncio
import json
import math
import random

import jsonschema
import pytest

from gpunode.engines import EngineRefused, GenerationJob
from gpunode.engines.simulated import VOCABULARY, SimulatedEngine
from gpunode.engines.structured import generate_value, json_tokens
from gpunode.generation import generate

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2, "maxLength": 30},
                "unit": {"enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
     "required": ["a"]},
    {"type": "array", "items": {"type": "integer", "minimum": -3, "maximum": 3}, "minItems": 2, "maxItems": 4},
    {"$defs": {"node": {"type": "object",
                        "properties": {"name": {"type": "string"},
                                       "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                        "required": ["name", "children"], "additionalProperties": False}},
     "$ref": "#/$defs/node"},
    {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}, {"const": 42}]},
    {"type": "object", "properties": {"flags": {"type": "array", "items": {"type": "boolean"}},
                                      "tags": {"type": ["string", "null"]}, "score": {"type": "number", "minimum": 5}},
     "required": ["flags", "tags", "score"], "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "integer"}},
]  # fmt: skip


@pytest.fixture(autouse=True)
def instant(monkeypatch):
    monkeypatch.setenv("SIMULATED_ENGINE_INSTANT", "true")


def job(**changes) -> GenerationJob:
    fields = {
        "request_id": "req_test",
        "model": "llama-3.1-8b-instruct",
        "parameters_billion": 8.03,
        "gpu_profile": "A100-80GB",
        "prompt": "user: What is the weather in Oslo?",
        "prompt_tokens": 12,
        "max_tokens": 4000,
        "seed": 7,
        **changes,
    }
    return GenerationJob(**fields)


def run(generation_job: GenerationJob) -> dict[int, dict]:
    """Each choice's text, tool calls, logprob entries and finish reason, as the node sends them."""
    out: dict[int, dict] = {}

    async def emit(index, text, reason, extra=None):
        choice = out.setdefault(index, {"text": "", "calls": {}, "lp": [], "reason": None})
        choice["text"] += text
        choice["lp"] += (extra or {}).get("lp", [])
        for piece in (extra or {}).get("tc", []):
            opened = {"id": piece.get("id"), "name": piece.get("name"), "arguments": ""}
            call = choice["calls"].setdefault(piece["index"], opened)
            call["arguments"] += piece["arguments"]
        if reason:
            choice["reason"] = reason

    asyncio.run(generate(SimulatedEngine(), generation_job, emit))
    return out


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_values_validate_against_their_schema(schema):
    for seed in range(40):
        jsonschema.validate(generate_value(schema, random.Random(seed)), schema)


def test_json_tokens_spell_the_text():
    text = json.dumps({"a b": [1, -2.5e3, None, True], "ü": "x  y"})
    assert "".join(json_tokens(text)) == text
    assert len(json_tokens(text)) > 10


def test_a_required_tool_call_has_arguments_valid_for_the_tool():
    for seed in range(10):
        choice = run(job(seed=seed, tools=[WEATHER], tool_choice="required"))[0]

        assert choice["reason"] == "tool_calls"
        assert choice["text"] == ""
        [call] = choice["calls"].values()
        assert call["name"] == "get_weather"
        assert call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])


def test_tool_calls_are_deterministic_for_a_seed():
    first = run(job(tools=[WEATHER, CLOCK], tool_choice="auto", n=3))
    assert run(job(tools=[WEATHER, CLOCK], tool_choice="auto", n=3)) == first


def test_parallel_calls_only_when_allowed():
    parallel = [len(run(job(seed=s, tools=[WEATHER, CLOCK]))[0]["calls"]) for s in range(20)]
    single = [len(run(job(seed=s, tools=[WEATHER, CLOCK], parallel_tool_calls=False))[0]["calls"]) for s in range(20)]

    assert set(parallel) == {1, 2}
    assert set(single) == {1}


def test_a_named_tool_choice_calls_that_function():
    named = {"type": "function", "function": {"name": "now"}}
    calls = [run(job(seed=s, tools=[WEATHER, CLOCK], tool_choice=named))[0]["calls"] for s in range(5)]

    assert {c["name"] for call in calls for c in call.values()} == {"now"}


def test_it_answers_in_words_after_a_tool_result_or_with_tool_choice_none():
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12 C"},
    ]  # fmt: skip
    after_result = run(job(tools=[WEATHER], messages=messages))[0]
    refused = run(job(tools=[WEATHER], tool_choice="none"))[0]

    for choice in (after_result, refused):
        assert choice["reason"] == "stop" and choice["text"] and not choice["calls"]


def test_json_mode_text_parses_as_an_object():
    for seed in range(10):
        text = run(job(seed=seed, response_format={"type": "json_object"}))[0]["text"]
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_json_schema_text_validates(schema):
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    for seed in range(5):
        jsonschema.validate(json.loads(run(job(seed=seed, response_format=response_format))[0]["text"]), schema)


def test_a_schema_it_cannot_enforce_is_refused():
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]$"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    with pytest.raises(EngineRefused, match="pattern"):
        run(job(response_format=response_format))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "string"}, "minItems": 10**9},
        {"type": "string", "minLength": 10**9},
        {"type": "array", "minItems": 200, "items": {"type": "array", "minItems": 200, "items": {"type": "integer"}}},
    ],
)
def test_a_schema_asking_for_too_much_is_refused_not_generated(schema):
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    with pytest.raises(EngineRefused, match=r"cannot be generated|more than"):
        run(job(response_format=response_format))


def test_logprobs_spell_the_text_and_match_its_uniform_sampling():
    choice = run(job(logprobs=True, top_logprobs=3))[0]

    assert "".join(e["token"] for e in choice["lp"]) == choice["text"]
    words = [e for e in choice["lp"] if e["token"] != "."]
    assert all(e["logprob"] == pytest.approx(-math.log(len(VOCABULARY))) for e in words)
    assert all(len(e["top"]) == 3 and e["top"][0][0] == e["token"] for e in words)


def test_logprobs_spell_the_text_cut_by_a_stop_sequence():
    whole = run(job(logprobs=True))[0]["text"]
    stop = whole[len(whole) // 2 : len(whole) // 2 + 3]  # inside some token, most likely

    choice = run(job(logprobs=True, stop=[stop]))[0]

    assert choice["text"] == whole[: whole.index(stop)]
    assert "".join(e["token"] for e in choice["lp"]) == choice["text"]


def test_logprobs_without_them_asked_are_not_sent():
    assert run(job())[0]["lp"] == []


def test_logit_bias_bans_and_favours_words():
    gpu = VOCABULARY.index("GPU")
    banned = run(job(logit_bias={str(gpu): -100}, n=4))
    favoured = run(job(logit_bias={str(gpu): 5}, logprobs=True))[0]

    assert all("GPU" not in choice["text"] for choice in banned.values())
    assert favoured["text"].count("GPU") > len(favoured["text"].split()) / 2
    gpu_logprobs = [e["logprob"] for e in favoured["lp"] if e["token"].strip() == "GPU"]
    assert all(-1 < lp < 0 for lp in gpu_logprobs)  # as likely as the bias makes it


def test_a_logit_bias_for_a_token_it_does_not_have_is_refused():
    with pytest.raises(EngineRefused, match=f"token id {len(VOCABULARY)}"):
        run(job(logit_bias={"3": 1.0, str(len(VOCABULARY)): 1.0}))


def test_penalties_change_repetition():
    def repeats(top_p=0.1, **penalty):
        words = run(job(n=4, top_p=top_p, **penalty))
        tokens = [w for choice in words.values() for w in choice["text"].replace(".", " ").lower().split()]
        return len(tokens) / len(set(tokens))

    assert repeats(frequency_penalty=2.0) < repeats() < repeats(frequency_penalty=-2.0)
    assert repeats(1.0, presence_penalty=2.0) < repeats(1.0) < repeats(1.0, presence_penalty=-2.0)

"""Tools, structured outputs and logprobs through the official OpenAI SDK, against a live Daphne and
real GPU node processes: ``llama-3.1-8b-instruct`` on the simulated engine, and ``proxy-llama`` on
the openai engine, whose upstream is the live platform itself (so every feature passes through a
node's openai engine, the platform's API, and back)."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from gpunode.tests.test_openai_engine import openai_deployments  # noqa: F401  (a fixture)

pytestmark = pytest.mark.live

SIMULATED, PROXIED = "llama-3.1-8b-instruct", "proxy-llama"
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_PARAMETERS}
TOOLS = [{"type": "function", "function": WEATHER}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


class Forecast(BaseModel):
    city: str
    days: list[int]
    sunny: bool


@pytest.fixture(params=[SIMULATED, PROXIED])
def model(request):
    if request.param == PROXIED:
        request.getfixturevalue("openai_deployments")
    return request.param


@pytest.fixture
def client(live, make_key):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=make_key(live.user, rpm=1000)[1], max_retries=0, timeout=30)


@pytest.fixture
def async_client(live, make_key):
    key = make_key(live.user, rpm=1000)[1]
    return openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=30)


def check_call(call) -> dict:
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    return arguments


def test_a_tool_call_and_its_result_round_trip(client, model):
    first = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required", seed=3)

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    check_call(call)
    assert first.usage.completion_tokens > 0

    messages = [*ASK, choice.message, {"role": "tool", "tool_call_id": call.id, "content": "12 degrees, cloudy"}]
    answer = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, seed=3)

    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls


def test_tool_calls_are_streamed_and_assembled_by_the_sdk(client, model):
    params = {"model": model, "messages": ASK, "tools": TOOLS, "tool_choice": "required", "seed": 5}
    whole = client.chat.completions.create(**params)

    with client.chat.completions.stream(**params) as stream:
        chunks = list(stream)
        final = stream.get_final_completion()

    deltas = [c.chunk.choices[0].delta.tool_calls for c in chunks if c.type == "chunk" and c.chunk.choices
              and c.chunk.choices[0].delta.tool_calls]  # fmt: skip
    assert len(deltas) > 2  # the name first, then the arguments in pieces
    assert deltas[0][0].id and deltas[0][0].function.name == "get_weather"
    assert all(d[0].id is None and d[0].function.name is None for d in deltas[1:])
    [call] = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert check_call(call) == json.loads(whole.choices[0].message.tool_calls[0].function.arguments)


def test_async_tool_calls(async_client, model):
    async def ask():
        return await async_client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=NAMED)

    async def both():
        return await asyncio.gather(ask(), ask())

    for completion in asyncio.run(both()):
        assert completion.choices[0].finish_reason == "tool_calls"
        check_call(completion.choices[0].message.tool_calls[0])


def test_tool_mistakes_are_400s_naming_the_param(client):
    model = SIMULATED
    cases = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "no"}}},
         "tool_choice.function.name"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "nope"}}}]},
         "tools[0].function.parameters"),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]}, "messages[1].tool_call_id"),
        ({"seed": 2**63}, "seed"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ]  # fmt: skip
    for fields, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**{"model": model, "messages": ASK, **fields})
        assert caught.value.body["param"] == param


def test_the_parse_helper_with_a_pydantic_model(client, model):
    completion = client.chat.completions.parse(model=model, messages=ASK, response_format=Forecast, seed=11)

    forecast = completion.choices[0].message.parsed
    assert isinstance(forecast, Forecast)
    assert json.loads(completion.choices[0].message.content) == forecast.model_dump()


def test_a_schema_the_engine_cannot_enforce_is_a_400(client, model):
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
        client.chat.completions.create(model=model, messages=ASK, response_format=response_format)
    assert caught.value.status_code == 400
    assert "pattern" in caught.value.body["message"]
    if model == SIMULATED:
        assert caught.value.body["param"] == "response_format.json_schema.schema"
    else:  # the upstream's 400, relayed with what failed and the upstream's param
        message = caught.value.body["message"]
        assert message.startswith("The upstream model server rejected the request (HTTP 400): ")
        assert "(param: response_format.json_schema.schema)" in message


def test_json_mode_streamed_and_whole(client, model):
    params = {"model": model, "messages": ASK, "response_format": {"type": "json_object"}, "seed": 2}
    whole = client.chat.completions.create(**params).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**params, stream=True)
                       if c.choices)  # fmt: skip

    assert isinstance(json.loads(whole), dict)
    assert streamed == whole


def test_chat_logprobs_spell_the_content_whole_and_streamed(client, model):
    params = {"model": model, "messages": ASK, "logprobs": True, "top_logprobs": 2, "seed": 4, "stop": ["e"]}
    choice = client.chat.completions.create(**params).choices[0]

    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    assert all(bytes(t.bytes) == t.token.encode() for t in tokens)

    chunks = [c for c in client.chat.completions.create(**params, stream=True) if c.choices]
    streamed = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in tokens]


def test_completion_logprobs(client, model):
    completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=12, logprobs=3, seed=1)
    choice = completion.choices[0]

    assert "".join(choice.logprobs.tokens) == choice.text
    assert len(choice.logprobs.token_logprobs) == len(choice.logprobs.tokens) == len(choice.logprobs.top_logprobs)
    assert all(len(top) <= 3 for top in choice.logprobs.top_logprobs)
    assert choice.logprobs.text_offset[0] == 0


def test_penalties_and_logit_bias_are_honoured(client, model):
    from gpunode.engines.simulated import VOCABULARY

    params = {"model": model, "messages": ASK, "seed": 9, "max_tokens": 40}
    plain = client.chat.completions.create(**params).choices[0].message.content
    biased = client.chat.completions.create(**params, logit_bias={str(VOCABULARY.index("GPU")): 8}).choices[0]
    penalised = client.chat.completions.create(**params, presence_penalty=1.5, frequency_penalty=1).choices[0]

    assert biased.message.content.count("GPU") > plain.count("GPU")
    assert penalised.message.content != plain


def test_what_the_engine_cannot_honour_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=SIMULATED, messages=ASK, logit_bias={"123456": 5})

    assert caught.value.body["code"] == "unsupported_by_engine"
    assert "'logit_bias'" in caught.value.body["message"]

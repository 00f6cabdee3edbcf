"""``POST /v1/completions``: validation, and the official SDK against a live platform."""

from __future__ import annotations

import json

import openai
import pytest

from gpucloud.openai_errors import ApiError
from inference.models import UsageRecord
from inference.validation import parse_completion_request
from nodeprotocol.tokens import count_tokens

MODEL = "llama-3.1-8b-instruct"


def _parse(**body):
    return parse_completion_request(json.dumps({"model": MODEL, **body}).encode())


def test_it_accepts_a_string_or_a_list_of_prompts():
    assert _parse(prompt="Hi").prompts == ["Hi"]
    request = _parse(prompt=["a", "b"], n=2, echo=True, stream=True, stream_options={"include_usage": True})
    assert (request.prompts, request.n, request.echo, request.include_usage) == (["a", "b"], 2, True, True)
    assert request.max_tokens == 16  # the legacy endpoint's default


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": ["x"] * 17}, "prompt"),
        ({"prompt": "x", "echo": "yes"}, "echo"),
        ({"prompt": "x", "suffix": "!"}, "suffix"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "logprobs": 2, "echo": True}, "logprobs"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "messages": []}, "messages"),
    ],
)
def test_it_rejects_bad_values_naming_the_param(body, param):
    with pytest.raises(ApiError) as error:
        _parse(**body)
    assert error.value.status == 400
    assert error.value.param == param


@pytest.fixture
def client(live, make_key):
    _, key = make_key(live.user, rpm=1000)
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.mark.live
def test_it_completes_a_prompt(client):
    raw = client.completions.with_raw_response.create(model=MODEL, prompt="Once upon a time", max_tokens=7)
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.choices[0].finish_reason == "length"
    assert count_tokens(completion.choices[0].text) == completion.usage.completion_tokens == 7
    assert completion.usage.prompt_tokens == count_tokens("Once upon a time")
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.endpoint, record.status_code, record.completion_tokens) == ("completions", 200, 7)


@pytest.mark.live
def test_several_prompts_n_and_echo(client):
    prompts = ["First prompt.", "Second prompt."]
    completion = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=4, echo=True, seed=3)
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    for choice in completion.choices:
        assert choice.text.startswith(prompts[choice.index // 2])
    assert completion.usage.completion_tokens == 16
    assert completion.usage.prompt_tokens == sum(count_tokens(p) for p in prompts)


@pytest.mark.live
def test_streaming_equals_the_whole_completion_and_stops_at_stop(client):
    params = {"model": MODEL, "prompt": "Tell a story", "max_tokens": 30, "temperature": 0}
    whole = client.completions.create(**params)
    chunks = list(client.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    word = whole.choices[0].text.split()[2]
    stopped = client.completions.create(**params, stop=word)
    assert stopped.choices[0].finish_reason == "stop"
    assert whole.choices[0].text.startswith(stopped.choices[0].text)
    assert word not in stopped.choices[0].text

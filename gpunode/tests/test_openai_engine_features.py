"""gpunode.engines.openai_engine: tools, structured outputs, logprobs and penalties pass through to the
upstream, and its tool-call deltas, log probabilities and errors come back faithfully."""

import asyncio

import httpx
import pytest

from gpunode.engines import GenerationJob
from gpunode.engines.openai_engine import OpenAIEngine, UpstreamError, UpstreamRejected, _logprobs, _tool_call_piece

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def job(**changes) -> GenerationJob:
    fields = {
        "request_id": "r",
        "model": "m",
        "parameters_billion": 8,
        "gpu_profile": "A100-80GB",
        "prompt": "p",
        "prompt_tokens": 1,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        **changes,
    }
    return GenerationJob(**fields)


def engine() -> OpenAIEngine:
    return OpenAIEngine({"base_url": "http://127.0.0.1:9/v1"})


def test_chat_features_are_forwarded_as_asked():
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                               "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "1", "tool_call_id": "c"},
    ]  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}}
    path, body = engine()._generation_body(
        job(messages=messages, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, response_format=fmt,
            logprobs=True, top_logprobs=3, presence_penalty=0.5, frequency_penalty=-1.0, logit_bias={"5": -100.0})
    )  # fmt: skip

    assert path == "/chat/completions"
    assert body["messages"] == messages
    assert (body["tools"], body["tool_choice"], body["parallel_tool_calls"]) == (TOOLS, "required", False)
    assert body["response_format"] == fmt
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert (body["presence_penalty"], body["frequency_penalty"], body["logit_bias"]) == (0.5, -1.0, {"5": -100.0})


def test_nothing_unasked_is_forwarded():
    _, body = engine()._generation_body(job())

    assert not {"tools", "tool_choice", "response_format", "logprobs", "top_logprobs", "logit_bias",
                "presence_penalty", "frequency_penalty", "parallel_tool_calls"} & set(body)  # fmt: skip


def test_completion_logprobs_are_forwarded_as_a_count():
    path, body = engine()._generation_body(job(prompts=["a"], logprobs=True, top_logprobs=2))

    assert (path, body["logprobs"]) == ("/completions", 2)
    assert "top_logprobs" not in body


def test_upstream_logprobs_become_protocol_entries():
    top = [{"token": "Hi", "logprob": -0.1}, {"token": "Yo", "logprob": -2.5}]
    chat = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": top}]}
    legacy = {"tokens": ["a", " b"], "token_logprobs": [-1.0, -0.5], "top_logprobs": [{"a": -1.0}, {" b": -0.5}]}

    assert _logprobs(chat, True) == [{"token": "Hi", "logprob": -0.1, "top": [["Hi", -0.1], ["Yo", -2.5]]}]
    assert _logprobs(legacy, False) == [
        {"token": "a", "logprob": -1.0, "top": [["a", -1.0]]},
        {"token": " b", "logprob": -0.5, "top": [[" b", -0.5]]},
    ]
    with pytest.raises(UpstreamError):
        _logprobs({"content": [{"token": "x"}]}, True)


def test_upstream_tool_call_deltas_become_pieces():
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    later = {"index": 0, "function": {"arguments": '{"a'}}

    assert _tool_call_piece(first) == {"index": 0, "id": "call_1", "name": "f", "arguments": ""}
    assert _tool_call_piece(later) == {"index": 0, "arguments": '{"a'}
    with pytest.raises(UpstreamError):
        _tool_call_piece("nope")


@pytest.mark.parametrize(
    ("status", "relayed", "code"),
    [(400, 400, "upstream_invalid_request"), (404, 404, "upstream_not_found"), (422, 400, "upstream_invalid_request"),
     (429, 429, "upstream_rate_limited"), (500, 502, "upstream_error"), (503, 502, "upstream_error")],
)  # fmt: skip
def test_upstream_errors_keep_their_status_and_message_prefixed_with_what_failed(status, relayed, code):
    body = {"error": {"message": "'top_logprobs' is too large", "param": "top_logprobs", "type": "x"}}
    response = httpx.Response(status, json=body, request=httpx.Request("POST", "http://u/v1/chat/completions"))

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(engine()._raise_for_status(response, "POST /chat/completions"))

    error = caught.value
    assert (error.status, error.code) == (relayed, code)
    assert "'top_logprobs' is too large" in str(error)
    assert str(error).startswith("The upstream")
    if status < 500:
        assert isinstance(error, UpstreamRejected)
        assert "(param: top_logprobs)" in str(error)

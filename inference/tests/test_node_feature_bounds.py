"""What a hostile node may send about tools and logprobs: the dispatcher checks every event against
the job it was handed (no tool calls a request did not offer, no more alternatives than asked)."""

from __future__ import annotations

import threading

import openai
import pytest

from conftest import ProtocolNode, wait_for
from deployments.models import Deployment

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Weather in Oslo?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _in_background(function) -> dict:
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = function()
        except Exception as error:
            outcome["error"] = error

    outcome["thread"] = thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return outcome


def _answer(node, client, request: dict, events: list[dict]) -> dict:
    """Send ``request`` through the SDK; the node answers its job with ``events`` and done."""
    call = _in_background(lambda: client.chat.completions.create(model=MODEL, messages=HELLO, **request))
    job = node.next("job")
    node.send({"type": "job.events", "job": job["job"], "events": events})
    node.send({"type": "job.done", "job": job["job"], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    call["thread"].join(30)
    return call


def test_tool_calls_and_logprobs_are_bounded_by_the_request(fleet, make_key):
    client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=make_key(fleet.user, rpm=10_000)[1], max_retries=0)
    node = ProtocolNode(fleet, "scripted").connect()
    try:
        queue = Deployment.objects.get(model__model_id=MODEL).queue_name
        wait_for(lambda: (n := fleet.node("scripted")) and queue in n.telemetry.get("queues", []), timeout=30)

        piece = {"index": 0, "id": "call_1", "name": "get_weather", "arguments": "{}"}
        entry = {"token": "Hi", "logprob": -0.5, "top": [["Hi", -0.5], ["Yo", -1.5]]}
        hostile = [
            ({}, [{"i": 0, "t": "", "f": "tool_calls", "tc": [piece]}]),  # no tools offered
            ({"tools": TOOLS}, [{"i": 0, "t": "", "f": "tool_calls", "tc": [{**piece, "name": "rm_rf"}]}]),
            ({"tools": TOOLS, "tool_choice": "none"}, [{"i": 0, "t": "", "f": "tool_calls", "tc": [piece]}]),
            ({}, [{"i": 0, "t": "", "f": "tool_calls"}]),
            ({}, [{"i": 0, "t": "Hi", "f": "stop", "lp": [entry]}]),  # logprobs not asked
            ({"logprobs": True, "top_logprobs": 1}, [{"i": 0, "t": "Hi", "f": "stop", "lp": [entry]}]),
            ({"logprobs": True}, [{"i": 0, "t": "Hi", "f": "stop", "lp": [{**entry, "top": [], "logprob": 3}]}]),
        ]
        for request, events in hostile:
            error = _answer(node, client, request, events).get("error")
            assert isinstance(error, openai.APIStatusError) and error.status_code == 502, (request, events)
            assert error.body["code"] == "node_protocol_error"
            node.next("cancel")

        honest = _answer(
            node,
            client,
            {"tools": TOOLS, "logprobs": True, "top_logprobs": 2},
            [{"i": 0, "t": "Hi", "f": None, "lp": [entry]}, {"i": 0, "t": "", "f": "tool_calls", "tc": [piece]}],
        )["result"]
        choice = honest.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Hi"
        assert choice.message.tool_calls[0].function.name == "get_weather"
        assert [t.token for t in choice.logprobs.content] == ["Hi"]
        assert [t.token for t in choice.logprobs.content[0].top_logprobs] == ["Hi", "Yo"]
    finally:
        node.close()

"""The playground in a real browser, at desktop and phone widths: a message streams a reply that
appears before the stats, the stats agree with what was metered, and "View code" shows the same
request as curl and Python, without a key, and the Python runs against the platform as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from inference.models import UsageRecord
from playground.services import PLAYGROUND_KEY_NAME

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"

# Records, in the page, when the reply first shows text and when the stats first show.
WATCH = """() => {
  window.__order = [];
  const content = () => document.querySelector('.pg-message-assistant .pg-content');
  const observer = new MutationObserver(() => {
    const c = content();
    if (c && c.textContent && !window.__order.includes('text')) window.__order.push('text');
    if (!document.getElementById('pg-stats').hidden && !window.__order.includes('stats')) window.__order.push('stats');
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def _press(page, selector: str) -> None:
    """Activate a button from the keyboard. (At phone width the header's nav, until it collapses,
    makes the page wider than the screen, and Chromium's mobile emulation then misplaces pointer
    clicks below the fold; keyboard activation is what a keyboard user does anyway.)"""
    page.locator(selector).press("Enter")


def _screenshot(page, name: str) -> None:
    directory = os.environ.get("GPUCLOUD_SCREENSHOTS")
    if directory:
        page.screenshot(path=os.path.join(directory, f"{name}-{page.viewport_name}.png"), full_page=True)


def test_a_reply_streams_in_then_its_stats(logged_in_page, live):
    page = logged_in_page
    page.goto("/playground/")
    page.select_option("#pg-model", MODEL)
    page.fill("#pg-max-tokens", "60")
    page.fill("#pg-input", "Tell me about GPUs.")
    page.evaluate(WATCH)

    _press(page, "#pg-send")
    page.wait_for_selector("#playground[data-state=done]", timeout=30_000)

    assert page.evaluate("window.__order") == ["text", "stats"]
    reply = page.locator(".pg-message-assistant .pg-content").inner_text()
    assert reply.strip()
    assert page.locator(".pg-message-user .pg-content").inner_text() == "Tell me about GPUs."
    assert page.locator("#pg-error").is_hidden()
    record = UsageRecord.objects.filter(user=live.user, api_key__name=PLAYGROUND_KEY_NAME).latest("created_at")
    tokens = page.locator("#pg-stat-tokens").inner_text()
    assert tokens == f"{record.prompt_tokens} in · {record.completion_tokens} out"
    assert re.fullmatch(r"\d+ ms", page.locator("#pg-stat-ttft").inner_text())
    assert float(page.locator("#pg-stat-tps").inner_text()) > 0
    assert page.locator("#pg-stat-cost").inner_text().startswith("$")
    assert record.cost > 0 and record.stream
    _screenshot(page, "playground")

    # The conversation goes on: the second request carries the first exchange.
    page.fill("#pg-input", "And more?")
    _press(page, "#pg-send")
    page.wait_for_function("document.querySelectorAll('.pg-message-assistant').length == 2")
    page.wait_for_selector("#playground[data-state=done]", timeout=30_000)
    second = UsageRecord.objects.filter(user=live.user, api_key__name=PLAYGROUND_KEY_NAME).latest("created_at")
    assert second.prompt_tokens > record.prompt_tokens


def test_view_code_shows_the_request_without_a_key_and_the_python_runs(logged_in_page, live, make_key):
    page = logged_in_page
    page.goto("/playground/")
    page.select_option("#pg-model", MODEL)
    page.fill("#pg-system", "Answer in one line; it's fine.")
    page.fill("#pg-max-tokens", "12")
    page.fill("#pg-input", "Hello from the code view")

    _press(page, "#pg-view-code")

    assert page.locator("#pg-code").is_visible()
    curl = page.locator("#pg-code-curl").inner_text()
    python = page.locator("#pg-code-python").inner_text()
    _screenshot(page, "playground-code")
    for code in (curl, python):
        assert "GPUCLOUD_API_KEY" in code
        assert "gpc_" not in code
        assert MODEL in code and "Hello from the code view" in code
    assert f"{live.url}/v1/chat/completions" in curl
    assert "it'\\''s fine" in curl  # the single quote survives the shell
    _, key = make_key(live.user, name="code view")
    ran = subprocess.run(
        [sys.executable, "-c", python],
        env={**os.environ, "GPUCLOUD_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"\[\d+ tokens\]", ran.stdout)
    _press(page, "#pg-code-close")
    assert page.locator("#pg-code").is_hidden()


def test_json_mode_and_tools_go_into_the_request_and_tool_calls_show(logged_in_page):
    page = logged_in_page
    page.goto("/playground/")
    page.fill("#pg-input", "What is the weather in Paris?")

    page.fill("#pg-tools", "not json")
    _press(page, "#pg-view-code")
    assert page.locator("#pg-tools-error").is_visible()
    assert page.locator("#pg-code").is_hidden()

    tools = '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]'
    page.fill("#pg-tools", tools)
    page.check("#pg-json")
    _press(page, "#pg-view-code")
    python = page.locator("#pg-code-python").inner_text()
    assert 'response_format={\n        "type": "json_object",\n    },' in python
    assert '"name": "get_weather"' in python and "tools=[" in python
    _press(page, "#pg-code-close")

    # Whether the API accepts tools is the API's business; the page shows tool calls streamed to it
    # (here a reply played by the browser, as OpenAI streams one: the call's fragments by index).
    sent = {}
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21, "cost": 0.0000042}},
    ]
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"

    def reply(route):
        sent.update(json.loads(route.request.post_data))
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/playground/chat/completions", reply)
    _press(page, "#pg-send")
    page.wait_for_selector("#playground[data-state=done]")

    assert sent["response_format"] == {"type": "json_object"}
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    calls = json.loads(page.locator(".pg-tool-calls pre").inner_text())
    assert calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    assert page.locator("#pg-stat-tokens").inner_text() == "12 in · 9 out"
    assert page.locator("#pg-stat-cost").inner_text() == "$0.0000042"


def test_an_ended_session_is_explained_not_billed(logged_in_page, live):
    page = logged_in_page
    page.goto("/playground/")
    before = UsageRecord.objects.count()
    page.context.clear_cookies()  # logged out elsewhere: no session, no CSRF cookie
    page.fill("#pg-input", "Hello?")

    _press(page, "#pg-send")

    page.wait_for_selector("#playground[data-state=error]")
    assert "Reload the page" in page.locator("#pg-error").inner_text()
    assert UsageRecord.objects.count() == before

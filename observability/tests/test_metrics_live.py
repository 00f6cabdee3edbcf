"""``/metrics`` against a live platform: real requests through the OpenAI SDK move the counters and
histograms with the right labels, and two web processes add up to one set of figures."""

from __future__ import annotations

import subprocess

import httpx
import openai
import pytest
from django.test import Client

from conftest import BASE_DIR, _free_port, _healthy, wait_for
from gpucloud.daphne import command as daphne_command

pytestmark = pytest.mark.live

STREAMED = "mistral-7b-instruct-v0.3"
FAST = "llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Say hello to the GPU cloud, at some length."}]
TOKEN = "metrics-token-for-the-two-process-test"


def scrape(url: str, **auth) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{url}/metrics", timeout=30, **auth)
    assert response.status_code == 200, response.text
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def staff_cookies(live) -> dict:
    """A staff session on the live platform (it shares the database and secret key). The user is
    read again first: a login through the live server's form (a browser test's) may have re-hashed
    its password since, and a session is bound to the password hash."""
    live.user.refresh_from_db()
    client = Client()
    client.force_login(live.user)
    return {"sessionid": client.cookies["sessionid"].value}


@pytest.fixture
def client(live, make_key):
    _, key = make_key(live.user, rpm=1000)
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=60)


def test_requests_move_the_counters_and_histograms(live, client, staff_cookies):
    before = scrape(live.url, cookies=staff_cookies)

    stream = client.chat.completions.create(
        model=STREAMED,
        messages=HELLO,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed_usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    completion = client.completions.create(model=STREAMED, prompt="Once upon a time", max_tokens=5)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=5)

    usages = [streamed_usage, completion.usage]
    chat_ok = {"model_name": STREAMED, "endpoint": "chat.completions", "status": "200"}

    def moved():
        after = scrape(live.url, cookies=staff_cookies)
        done = value(after, "gpucloud:requests_total", **chat_ok) - value(before, "gpucloud:requests_total", **chat_ok)
        return after if done >= 1 else None

    after = wait_for(moved, timeout=15, message="the requests to show in /metrics")

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    model = {"model_name": STREAMED}
    assert delta("gpucloud:requests_total", **chat_ok) == 1
    assert delta("gpucloud:requests_total", model_name=STREAMED, endpoint="completions", status="200") == 1
    # The model a client names is no label: a request that resolves to none counts as "unknown".
    assert delta("gpucloud:requests_total", model_name="unknown", endpoint="chat.completions", status="404") == 1
    assert not [key for key in after if ("model_name", "no-such-model") in key[1]]
    assert delta("gpucloud:request_success_total", model_name=STREAMED, endpoint="chat.completions") == 1
    assert delta("gpucloud:prompt_tokens_total", **model) == sum(u.prompt_tokens for u in usages)
    generated = sum(u.completion_tokens for u in usages)
    assert delta("gpucloud:generation_tokens_total", **model) == generated > 0
    spent = sum(u.model_extra["cost"] for u in usages)
    assert spent > 0
    assert delta("gpucloud:spend_usd_total", **model) == pytest.approx(spent)

    assert delta("gpucloud:time_to_first_token_seconds_count", **model) == 2
    assert delta("gpucloud:time_to_first_token_seconds_sum", **model) > 0
    # Every output token after each request's first batch: at least some, at most all of them.
    assert 1 <= delta("gpucloud:inter_token_latency_seconds_count", **model) <= generated
    assert delta("gpucloud:inter_token_latency_seconds_sum", **model) > 0
    for endpoint in ("chat.completions", "completions"):
        assert delta("gpucloud:e2e_request_latency_seconds_count", model_name=STREAMED, endpoint=endpoint) == 1
        assert (
            delta("gpucloud:e2e_request_latency_seconds_bucket", model_name=STREAMED, endpoint=endpoint, le="+Inf") == 1
        )
    assert delta("gpucloud:request_queue_time_seconds_count", **model) == 2
    # The 404 was never queued: no latency for it.
    assert not [key for key in after if key[0].startswith("gpucloud:e2e") and ("model_name", "unknown") in key[1]]

    node = live.node("main").name
    assert value(after, "gpucloud:node_up", node=node) == 1
    gpu = {"node": node, "gpu": "0", "gpu_name": "A100-80GB"}
    assert value(after, "gpucloud:node_gpu_memory_total_bytes", **gpu) == 80 * 1024 * 2**20
    assert 0 <= value(after, "gpucloud:node_gpu_utilization_ratio", **gpu) <= 1
    assert value(after, "gpucloud:node_gpu_temperature_celsius", **gpu) > 0
    deployments = {dict(labels)["model_name"] for name, labels in after if name == "gpucloud:num_requests_waiting"}
    assert {STREAMED, FAST} <= deployments


@pytest.fixture
def second_web_process(live):
    """Another Daphne on the live platform's database and Redis, with a metrics token."""
    port = _free_port()
    process = subprocess.Popen(
        daphne_command("127.0.0.1", port), env={**live.env, "METRICS_TOKEN": TOKEN}, cwd=BASE_DIR
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), timeout=30, message="the second web process")
        yield url
    finally:
        live.stop(process)


def test_two_web_processes_add_up(live, make_key, second_web_process, staff_cookies):
    _, key = make_key(live.user, rpm=1000)
    by_token = {"headers": {"Authorization": f"Bearer {TOKEN}"}}
    labels = {"model_name": FAST, "endpoint": "completions", "status": "200"}
    before = value(scrape(second_web_process, **by_token), "gpucloud:requests_total", **labels)
    tokens_before = value(scrape(second_web_process, **by_token), "gpucloud:generation_tokens_total", model_name=FAST)

    for url, count in ((live.url, 3), (second_web_process, 2)):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
        for _ in range(count):
            assert client.completions.create(model=FAST, prompt="Count:", max_tokens=4).usage.completion_tokens == 4

    # Each process flushes its own figures to Redis within a second; either one answers the sum.
    def summed(url: str, **auth):
        samples = scrape(url, **auth)
        return samples if value(samples, "gpucloud:requests_total", **labels) - before >= 5 else None

    for url, auth in ((second_web_process, by_token), (live.url, {"cookies": staff_cookies})):
        samples = wait_for(lambda url=url, auth=auth: summed(url, **auth), timeout=15, message=f"5 requests at {url}")
        assert value(samples, "gpucloud:requests_total", **labels) - before == 5
        assert value(samples, "gpucloud:generation_tokens_total", model_name=FAST) - tokens_before == 20
        assert (
            value(samples, "gpucloud:e2e_request_latency_seconds_count", model_name=FAST, endpoint="completions") >= 5
        )

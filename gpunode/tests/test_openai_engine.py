"""gpunode.engines.openai_engine against real servers: the live platform itself as the upstream,
and a small misbehaving server (upstream_server.py) in a process of its own."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path

import httpx
import openai
import pytest

from gpunode.engines import EngineUnavailable, GenerationJob, TokenEvent, get_engine
from gpunode.engines.openai_engine import OpenAIEngine, UpstreamError, UpstreamRejected
from gpunode.generation import generate
from gpunode.jobs import run_job
from gpunode.replicas import Replicas
from inference.models import UsageRecord

MODEL = "llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Say hello to the GPU cloud."}]
UPSTREAM_SERVER = Path(__file__).with_name("upstream_server.py")


def job(**changes) -> GenerationJob:
    fields = {
        "request_id": "req_engine_test",
        "model": "our-name-for-it",
        "parameters_billion": 8.03,
        "gpu_profile": "",
        "prompt": "user: Say hello to the GPU cloud.",
        "prompt_tokens": 12,
        "messages": HELLO,
        "max_tokens": 16,
        "temperature": 0.0,
        **changes,
    }
    return GenerationJob(**fields)


def stream(engine, generation_job: GenerationJob) -> list[TokenEvent]:
    async def collect():
        async with aclosing(engine.generate(generation_job)) as events:
            return [event async for event in events]

    return asyncio.run(collect())


def texts(events: list[TokenEvent], n: int = 1) -> list[str]:
    out = [""] * n
    for event in events:
        if event.text:
            out[event.index] += event.text
    return out


def finishes(events: list[TokenEvent]) -> dict[int, str]:
    return {e.index: e.finish_reason for e in events if e.text is None}


def test_it_needs_a_base_url():
    with pytest.raises(EngineUnavailable, match="base_url"):
        OpenAIEngine({})
    with pytest.raises(EngineUnavailable, match="base_url"):
        OpenAIEngine({"base_url": "127.0.0.1:8001/v1"})


def test_the_registry_keeps_one_instance_per_config():
    config = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}
    engine = get_engine("openai", config)

    assert get_engine("openai", {"model": "m", "base_url": "http://127.0.0.1:9/v1"}) is engine
    assert get_engine("openai", {**config, "model": "other"}) is not engine
    assert engine.deterministic is False


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.setenv("GPUCLOUD_ENGINE_ENV_ALLOW", "GPC_TEST_UPSTREAM_KEY")
    monkeypatch.delenv("GPC_TEST_UPSTREAM_KEY", raising=False)
    engine = OpenAIEngine({"base_url": "http://127.0.0.1:9/v1", "api_key_env": "GPC_TEST_UPSTREAM_KEY"})

    with pytest.raises(EngineUnavailable, match=r"GPC_TEST_UPSTREAM_KEY.*is not set"):
        asyncio.run(engine.prepare())


def test_a_key_variable_the_operator_did_not_allow_is_refused(monkeypatch):
    monkeypatch.delenv("GPUCLOUD_ENGINE_ENV_ALLOW", raising=False)
    monkeypatch.setenv("HOME_SECRET", "do-not-send")
    engine = OpenAIEngine({"base_url": "http://127.0.0.1:9/v1", "api_key_env": "HOME_SECRET"})

    with pytest.raises(EngineUnavailable, match=r"not allowed.*GPUCLOUD_ENGINE_ENV_ALLOW"):
        asyncio.run(engine.prepare())


def test_the_nodes_own_settings_are_never_an_engine_secret(monkeypatch):
    """Not even when the operator lists them: the node's credential and token stay private."""
    monkeypatch.setenv("GPUCLOUD_JOIN_TOKEN", "gpcj_secret")
    monkeypatch.setenv("GPUCLOUD_ENGINE_ENV_ALLOW", "GPUCLOUD_JOIN_TOKEN")
    engine = OpenAIEngine({"base_url": "http://127.0.0.1:9/v1", "api_key_env": "GPUCLOUD_JOIN_TOKEN"})

    with pytest.raises(EngineUnavailable, match="private") as caught:
        asyncio.run(engine.prepare())
    assert "gpcj_secret" not in str(caught.value)


def test_an_inline_key_is_refused():
    with pytest.raises(EngineUnavailable, match="api_key_env"):
        OpenAIEngine({"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-inline"})


# --- the live platform as the upstream ----------------------------------------------------------


@pytest.fixture
def upstream(live, make_key, monkeypatch):
    """(engine config, an OpenAI SDK client) for the live platform as an upstream server; its key is
    in the (allowed) environment variable GPC_TEST_UPSTREAM_KEY, as on a node."""
    _, key = make_key(live.user, rpm=10_000)
    monkeypatch.setenv("GPUCLOUD_ENGINE_ENV_ALLOW", "GPC_TEST_UPSTREAM_KEY")
    monkeypatch.setenv("GPC_TEST_UPSTREAM_KEY", key)
    config = {"base_url": f"{live.url}/v1", "api_key_env": "GPC_TEST_UPSTREAM_KEY", "model": MODEL}
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=30)
    return config, client


@pytest.mark.live
def test_prepare_succeeds_against_a_live_upstream(upstream):
    config, _ = upstream
    asyncio.run(OpenAIEngine(config).prepare())


@pytest.mark.live
def test_prepare_names_rejected_credentials_without_repeating_the_key(upstream, monkeypatch):
    config, _ = upstream
    wrong = "gpc_000000000000_" + "x" * 40
    monkeypatch.setenv("GPC_TEST_UPSTREAM_KEY", wrong)
    with pytest.raises(UpstreamError, match="refused our credentials") as caught:
        asyncio.run(OpenAIEngine(config).prepare())
    assert wrong not in str(caught.value)


@pytest.mark.live
def test_it_streams_the_upstreams_text_finish_reason_and_usage(upstream):
    config, client = upstream
    expected = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, temperature=0)
    generation_job = job(max_tokens=16)

    events = stream(OpenAIEngine(config), generation_job)

    assert len([e for e in events if e.text]) > 1
    assert texts(events) == [expected.choices[0].message.content]
    assert finishes(events) == {0: "length"}
    assert events[-1] == TokenEvent(0, None, "length")
    assert generation_job.reported_usage == {
        "prompt_tokens": expected.usage.prompt_tokens,
        "completion_tokens": expected.usage.completion_tokens,
    }


@pytest.mark.live
def test_a_natural_end_is_a_stop(upstream):
    config, client = upstream
    expected = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0)
    generation_job = job(max_tokens=4000, max_tokens_given=False)

    events = stream(OpenAIEngine(config), generation_job)

    assert texts(events) == [expected.choices[0].message.content]
    assert finishes(events) == {0: "stop"}
    assert generation_job.reported_usage["completion_tokens"] == expected.usage.completion_tokens


@pytest.mark.live
def test_stop_sequences_are_honoured(upstream):
    config, client = upstream
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=30, temperature=0)
    text = full.choices[0].message.content
    stop = text.split()[3]  # a word a little way in
    generation_job = job(max_tokens=30, stop=[stop])

    events = stream(OpenAIEngine(config), generation_job)

    assert texts(events) == [text[: text.index(stop)]]
    assert finishes(events) == {0: "stop"}


@pytest.mark.live
def test_several_choices_are_interleaved_by_index(upstream):
    config, client = upstream
    expected = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0, n=3)
    generation_job = job(max_tokens=12, n=3)

    events = stream(OpenAIEngine(config), generation_job)

    by_index = {choice.index: choice.message.content for choice in expected.choices}
    assert texts(events, 3) == [by_index[i] for i in range(3)]
    assert finishes(events) == dict.fromkeys(range(3), "length")
    assert generation_job.reported_usage["completion_tokens"] == expected.usage.completion_tokens == 36


@pytest.mark.live
def test_the_runner_reports_the_upstreams_usage(upstream):
    config, client = upstream
    expected = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10, temperature=0)
    generation_job = job(max_tokens=10, prompt_tokens=1)
    emitted = []

    async def emit(index, text, reason):
        emitted.append((index, text, reason))

    result = asyncio.run(generate(OpenAIEngine(config), generation_job, emit))

    assert "".join(t for _, t, _ in emitted) == expected.choices[0].message.content
    assert result.finish_reasons == {0: "length"}
    assert (result.prompt_tokens, result.completion_tokens) == (
        expected.usage.prompt_tokens,
        expected.usage.completion_tokens,
    )


@pytest.mark.live
def test_prompts_go_to_the_completions_endpoint(upstream):
    config, client = upstream
    prompts = ["Once upon a time", "The GPU"]
    expected = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=8, temperature=0)
    generation_job = job(prompts=prompts, n=4, max_tokens=8, messages=[])

    events = stream(OpenAIEngine(config), generation_job)

    by_index = {choice.index: choice.text for choice in expected.choices}
    assert texts(events, 4) == [by_index[i] for i in range(4)]
    assert finishes(events) == dict.fromkeys(range(4), "length")
    assert generation_job.reported_usage["completion_tokens"] == expected.usage.completion_tokens == 32


@pytest.mark.live
def test_an_upstream_refusal_is_the_clients_error(upstream):
    config, _ = upstream
    with pytest.raises(UpstreamRejected, match="maximum context length") as caught:
        stream(OpenAIEngine(config), job(max_tokens=10_000_000))
    assert caught.value.status == 400


# --- a misbehaving upstream ---------------------------------------------------------------------


@pytest.fixture
def bad_upstream(request):
    """Start upstream_server.py in the mode given by the test's parametrisation; yields its /v1 URL."""
    server = subprocess.Popen(
        [sys.executable, str(UPSTREAM_SERVER), request.param],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def failing_stream(base_url: str) -> tuple[list[TokenEvent], EngineUnavailable]:
    """The events an engine yields before it fails, and the failure."""
    engine = OpenAIEngine({"base_url": base_url, "timeout": 10})
    seen: list[TokenEvent] = []

    async def run():
        async with aclosing(engine.generate(job())) as events:
            async for event in events:
                seen.append(event)

    with pytest.raises(EngineUnavailable) as caught:
        asyncio.run(run())
    return seen, caught.value


@pytest.mark.parametrize("bad_upstream", ["cut"], indirect=True)
def test_a_connection_dropped_mid_stream_fails_clearly(bad_upstream):
    seen, error = failing_stream(bad_upstream)

    assert texts(seen) == ["Hello from upstream"]
    assert isinstance(error, UpstreamError)
    assert error.code == "upstream_error"
    assert bad_upstream in str(error)
    assert "failed during POST /chat/completions" in str(error)


@pytest.mark.parametrize("bad_upstream", ["cut-plain"], indirect=True)
def test_a_stream_ending_early_fails_clearly(bad_upstream):
    seen, error = failing_stream(bad_upstream)

    assert texts(seen) == ["Hello from upstream"]
    assert "closed the stream before the reply was complete" in str(error)


@pytest.mark.parametrize("bad_upstream", ["error500"], indirect=True)
def test_an_upstream_500_fails_clearly(bad_upstream):
    seen, error = failing_stream(bad_upstream)

    assert seen == []
    assert isinstance(error, UpstreamError)
    assert error.status == 502
    assert "HTTP 500" in str(error)
    assert "CUDA out of memory (simulated)" in str(error)
    with pytest.raises(UpstreamError, match="answered GET /models with HTTP 500"):
        asyncio.run(OpenAIEngine({"base_url": bad_upstream}).prepare())


@pytest.mark.parametrize("bad_upstream", ["reject"], indirect=True)
def test_an_upstream_400_is_passed_on_as_a_client_error(bad_upstream):
    _, error = failing_stream(bad_upstream)

    assert isinstance(error, UpstreamRejected)
    assert (error.status, error.code) == (400, "upstream_invalid_request")
    assert "maximum context length is 4096 tokens" in str(error)


@pytest.mark.parametrize("bad_upstream", ["error-event"], indirect=True)
def test_an_error_event_mid_stream_fails_clearly(bad_upstream):
    seen, error = failing_stream(bad_upstream)

    assert texts(seen) == ["Hello from upstream"]
    assert "failed mid-reply: the GPU fell off the bus (simulated)" in str(error)


@pytest.mark.parametrize("bad_upstream", ["garbage"], indirect=True)
def test_a_malformed_event_fails_clearly(bad_upstream):
    _, error = failing_stream(bad_upstream)

    assert "malformed event" in str(error)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prepare_fails_clearly_when_nothing_listens():
    base_url = f"http://127.0.0.1:{_closed_port()}/v1"

    with pytest.raises(EngineUnavailable, match="is unreachable") as caught:
        asyncio.run(OpenAIEngine({"base_url": base_url}).prepare())
    assert base_url in str(caught.value)
    assert "engine_config.base_url" in str(caught.value)


def test_embed_fails_clearly_when_nothing_listens():
    engine = OpenAIEngine({"base_url": f"http://127.0.0.1:{_closed_port()}/v1"})

    with pytest.raises(UpstreamError, match="is unreachable"):
        asyncio.run(engine.embed(["hello"], model="m"))


def test_a_node_job_ends_with_the_upstreams_error():
    """run_job turns the engine's failure into a ``job.error`` message, which the platform renders
    as an OpenAI-shaped error (or an error event and [DONE] in a stream)."""
    base_url = f"http://127.0.0.1:{_closed_port()}/v1"
    config = {"base_url": base_url}
    spec = {"id": 1, "deployment": "d", "queue": "deployment.d", "engine": "openai", "engine_config": config}
    sent = []

    async def run():
        replicas = Replicas()
        replicas.specs["1"] = spec
        replicas.states["1"] = {"state": "running", "reason": ""}
        message = {"type": "job", "job": "j1", "kind": "generate", "replica": 1, "spec": job().to_wire()}

        async def send(out):
            sent.append(out)

        await run_job(message, replicas, send)

    asyncio.run(run())

    [error] = sent
    assert (error["type"], error["job"]) == ("job.error", "j1")
    assert (error["code"], error["status"], error["engine_fault"]) == ("upstream_error", 502, True)
    assert "is unreachable" in error["message"]


# --- openai deployments served by a worker that joined with --engine openai ----------------------


@pytest.fixture(scope="module")
def openai_deployments(live_platform, django_db_blocker):
    """An ``--engine openai`` worker serving two openai deployments: ``proxy-llama`` forwards to the
    live platform itself, ``cut-llama`` to an upstream that drops every stream mid-way.
    Yields (the SDK client's API key, the cut upstream's URL)."""
    from accounts.models import ApiKey
    from accounts.services import api_key_create
    from conftest import wait_for
    from deployments.models import CatalogModel, Deployment

    server = subprocess.Popen(
        [sys.executable, str(UPSTREAM_SERVER), "cut"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    created = []
    worker = None
    with django_db_blocker.unblock():
        try:
            cut_url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
            _, key = api_key_create(
                user=live_platform.user, name="openai engine", scopes=(ApiKey.Scope.INFERENCE,), rpm=10_000
            )
            upstreams = {
                "proxy-llama": {"base_url": f"{live_platform.url}/v1", "api_key_env": "GPC_PROXY_KEY", "model": MODEL},
                "cut-llama": {"base_url": cut_url, "model": "upstream-model"},
            }
            for name, config in upstreams.items():
                model = CatalogModel.objects.create(
                    model_id=name, family="llama", parameters_billion=8, default_engine="openai"
                )
                deployment = Deployment.objects.create(
                    name=name, model=model, engine="openai", engine_config=config, status="running"
                )
                created.append((deployment, model))
            # The upstream's key lives in the node's environment, allowed by its operator.
            node_env = {"GPC_PROXY_KEY": key, "GPUCLOUD_ENGINE_ENV_ALLOW": "GPC_PROXY_KEY"}
            worker = live_platform.start_worker("openai-node", "--engine=openai", env=node_env)

            def serving():
                node = live_platform.node("openai-node")
                queues = node.telemetry.get("queues", []) if node else []
                return all(f"deployment.{name}" in queues for name in upstreams)

            wait_for(serving, timeout=60, message="the openai worker to serve its deployments")
            yield key, cut_url
        finally:
            if worker is not None:
                live_platform.stop(worker)
                live_platform.workers.remove(worker)
            for deployment, model in created:
                deployment.delete()
                model.delete()
            server.stdin.close()
            server.wait(timeout=10)


@pytest.fixture
def proxied(live, openai_deployments):
    key, _ = openai_deployments
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.mark.live
def test_an_openai_deployment_serves_through_its_upstream(proxied):
    direct = proxied.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, temperature=0)
    raw = proxied.chat.completions.with_raw_response.create(
        model="proxy-llama", messages=HELLO, max_tokens=20, temperature=0
    )
    via = raw.parse()

    assert via.model == "proxy-llama"
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.choices[0].finish_reason == "length"
    assert (via.usage.prompt_tokens, via.usage.completion_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
    )
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.deployment, record.status_code, record.completion_tokens) == ("proxy-llama", 200, 20)
    assert record.worker.startswith("openai-node-")

    chunks = list(
        proxied.chat.completions.create(
            model="proxy-llama",
            messages=HELLO,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 20


@pytest.mark.live
def test_an_upstream_failure_is_an_openai_error(proxied):
    with pytest.raises(openai.APIStatusError) as caught:
        proxied.chat.completions.create(model="cut-llama", messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_error"
    assert caught.value.body["type"] == "server_error"
    assert "failed during POST /chat/completions" in caught.value.body["message"]


@pytest.mark.live
def test_an_upstream_failure_mid_stream_ends_with_an_error_event(live, openai_deployments):
    key, _ = openai_deployments
    body = {"model": "cut-llama", "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST", f"{live.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]

    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_error"
    assert error["type"] == "server_error"
    text = "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for chunk in map(json.loads, events[:-2])
        if chunk.get("choices")
    )
    assert text == "Hello from upstream"

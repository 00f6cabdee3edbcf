"""The official OpenAI SDK against a live Daphne and a real GPU worker process."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from accounts.services import api_key_revoke
from inference.models import UsageRecord

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Say hello to the GPU cloud."}]


@pytest.fixture
def key(live, make_key):
    return make_key(live.user, rpm=1000)


@pytest.fixture
def client(live, key):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key[1], max_retries=0, timeout=30)


def test_models_are_listed_and_retrieved(client):
    ids = {model.id for model in client.models.list()}
    assert ids == {"llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "qwen2.5-72b-instruct"}
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_completion_works(client, key):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    completion = raw.parse()

    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["x-ratelimit-remaining-requests"]) < 1000
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 12
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12

    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert record.api_key == key[0]
    assert (record.status_code, record.prompt_tokens, record.completion_tokens) == (
        200,
        completion.usage.prompt_tokens,
        12,
    )
    assert record.worker.startswith("main-")
    assert record.latency_ms > 0
    assert record.cost > 0


def test_streaming_with_usage_equals_the_non_streamed_text(client):
    params = {"model": MODEL, "messages": HELLO, "max_tokens": 30, "temperature": 0}
    whole = client.chat.completions.create(**params)

    chunks = list(client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 30
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1


def test_the_stream_is_server_sent_events_ending_in_done(live, key):
    response = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key[1]}"},
        json={"model": MODEL, "messages": HELLO, "max_tokens": 5, "stream": True},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"


def test_stop_n_and_seed_are_honoured(client):
    first = client.chat.completions.create(model=MODEL, messages=HELLO, n=2, seed=7, max_tokens=40)
    again = client.chat.completions.create(model=MODEL, messages=HELLO, n=2, seed=7, max_tokens=40)
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert first.choices[0].message.content != first.choices[1].message.content
    assert first.usage.completion_tokens == 80

    word = first.choices[0].message.content.split()[3]
    stopped = client.chat.completions.create(model=MODEL, messages=HELLO, n=2, seed=7, max_tokens=40, stop=[word])
    assert stopped.choices[0].finish_reason == "stop"
    assert word not in stopped.choices[0].message.content
    assert first.choices[0].message.content.startswith(stopped.choices[0].message.content)


def test_the_async_client_works(live, key):
    async def main():
        client = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=key[1], max_retries=0, timeout=30)
        messages = [[{"role": "user", "content": f"Request number {i}"}] for i in range(4)]
        replies = await asyncio.gather(
            *(client.chat.completions.create(model=MODEL, messages=m, max_tokens=8) for m in messages)
        )
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return replies, streamed

    replies, streamed = asyncio.run(main())
    assert all(r.usage.completion_tokens == 8 for r in replies)
    assert streamed


def test_bad_keys_raise_authentication_error(live, make_key):
    api_key, raw = make_key(live.user)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=raw, max_retries=0)
    client.models.list()

    api_key_revoke(api_key=api_key)
    with pytest.raises(openai.AuthenticationError) as revoked:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert revoked.value.code == "invalid_api_key"

    wrong = openai.OpenAI(base_url=f"{live.url}/v1", api_key=raw[:-4] + "abcd", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_unknown_model_raises_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert error.value.code == "model_not_found"
    assert error.value.body["param"] == "model"


def test_invalid_values_raise_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=3)
    assert error.value.body["param"] == "temperature"
    assert error.value.body["type"] == "invalid_request_error"
    assert set(error.value.body) == {"message", "type", "param", "code"}


def test_exceeding_the_key_rpm_raises_rate_limit_error(live, make_key):
    _, raw = make_key(live.user, rpm=2)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=raw, max_retries=0)
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert error.value.code == "rate_limit_exceeded"
    assert int(error.value.response.headers["retry-after"]) >= 1
    assert error.value.response.headers["x-ratelimit-limit-requests"] == "2"
    assert error.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_every_request_is_metered_exactly_once(client, key):
    ids = []
    for stream in (False, True, False):
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=4, stream=stream)
        if stream:
            list(raw.parse())
        ids.append(raw.headers["x-request-id"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HELLO)

    records = UsageRecord.objects.filter(api_key=key[0]).order_by("created_at")
    assert [r.request_id for r in records][:3] == ids
    assert len(set(records.values_list("request_id", flat=True))) == records.count() == 4
    assert [r.status_code for r in records] == [200, 200, 200, 404]
    assert [r.stream for r in records][:3] == [False, True, False]

"""Billing on the request path, in-process: admission before the queue, settlement once, the cost
in the response, the cap on generated tokens, and large bodies parsed off the event loop.

No GPU worker runs here: a request that is admitted waits for nobody and answers 503 (the queue
timeout is tiny). Tests where a node answers are in test_admission_live.py.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync

from billing import services
from billing.models import LedgerEntry
from billing.redis_state import reservation_keys
from billing.selectors import balance_of, reconciliation_differences, request_cost
from deployments.models import CatalogModel
from gpucloud.redis_client import get_redis
from inference import bodypool, views
from inference.metering import UsageMeter
from inference.models import UsageRecord
from inference.responses import ChatCompletion
from nodeprotocol.tokens import count_tokens

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "llama-3.1-8b-instruct"  # $0.10 per million input tokens, $0.20 per million output tokens
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(autouse=True)
def quick(settings):
    settings.INFERENCE_QUEUE_TIMEOUT = 0.01


@pytest.fixture
def model(catalog):
    return CatalogModel.objects.get(model_id=MODEL)


def _post(client, key: str, path: str = "/v1/chat/completions", **body):
    body = {"model": MODEL, "messages": HELLO, **body}
    if path == "/v1/completions":
        body.pop("messages")
    return client.post(path, data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def _reserved(user) -> dict:
    res, _ = reservation_keys(user.pk)
    return {k.decode(): int(v) for k, v in get_redis().hgetall(res).items() if not k.startswith(b"r:")}


def _charges():
    return LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE)


def test_a_request_the_balance_cannot_cover_is_refused_and_not_charged(client, user, make_key, catalog):
    services.adjustment(user=user, amount=Decimal("-5.00"))
    _, key = make_key(user, rpm=100)

    response = _post(client, key, max_tokens=10)

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "balance" in error["message"]
    assert response["x-ratelimit-limit-requests"] == "100"
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.status_code, record.error_code, record.cost) == (429, "insufficient_quota", Decimal("0"))
    assert not _charges().exists()
    assert reconciliation_differences() == []


def test_a_tpm_refusal_is_a_rate_limit_with_the_token_headers(client, user, make_key, catalog):
    _, key = make_key(user, tpm=50)

    response = _post(client, key, max_tokens=100)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(response["Retry-After"]) >= 1
    assert response["x-ratelimit-limit-tokens"] == "50"
    assert "x-ratelimit-limit-requests" in response


def test_a_request_nobody_serves_is_recorded_free_and_its_reservation_freed(client, user, make_key, catalog):
    api_key, key = make_key(user, max_parallel=1)

    first = _post(client, key, max_tokens=10)
    second = _post(client, key, max_tokens=10)  # max_parallel 1: only if the first was freed

    assert [first.status_code, second.status_code] == [503, 503]
    assert second.json()["error"]["code"] == "no_worker_available"
    record = UsageRecord.objects.get(request_id=first["x-request-id"])
    assert record.status_code == 503
    assert record.cost == 0
    assert record.price_version is not None  # settled (at no cost), not merely recorded
    assert record.prompt_tokens > 0
    assert not _charges().exists()
    reserved = _reserved(user)
    assert (reserved["total"], reserved[f"k:{api_key.pk}"], reserved[f"n:{api_key.pk}"]) == (0, 0, 0)
    assert balance_of(user) == Decimal("5.00")


def test_validation_errors_are_recorded_without_admission(client, user, make_key, catalog):
    _, key = make_key(user)

    response = _post(client, key, temperature=5)

    assert response.status_code == 400
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.status_code, record.cost, record.price_version) == (400, 0, None)
    assert _reserved(user) == {}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"n": 2, "max_tokens": 60}),
        ("/v1/completions", {"prompt": ["a", "b", "c"], "max_tokens": 40}),
    ],
)
def test_a_request_over_the_generated_token_cap_is_400_naming_max_tokens(
    client, user, make_key, catalog, settings, path, body
):
    settings.MAX_GENERATED_TOKENS_PER_REQUEST = 100
    _, key = make_key(user)

    response = _post(client, key, path, **body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "max_tokens"
    assert "100" in error["message"]
    assert _reserved(user) == {}


def test_a_request_at_the_cap_is_admitted(client, user, make_key, catalog, settings):
    settings.MAX_GENERATED_TOKENS_PER_REQUEST = 100
    _, key = make_key(user)

    response = _post(client, key, n=2, max_tokens=50)

    assert response.status_code == 503  # admitted and queued: no worker runs here


def test_the_default_max_tokens_fits_the_cap(model, settings):
    settings.MAX_GENERATED_TOKENS_PER_REQUEST = 1000
    params = SimpleNamespace(max_tokens=None, n=4)

    assert views._max_tokens(params, model, longest_prompt=10, choices=4, param="messages") == 250
    settings.MAX_GENERATED_TOKENS_PER_REQUEST = 10**9
    assert views._max_tokens(params, model, longest_prompt=10, choices=4, param="messages") == (
        model.context_length - 10
    )


@pytest.mark.parametrize(("size", "off_loop"), [(1_000, False), (200_000, True)])
def test_large_bodies_are_parsed_off_the_event_loop(client, user, make_key, catalog, monkeypatch, size, off_loop):
    seen = []
    parse = bodypool.PARSERS["chat"]

    def watched(body):
        try:
            asyncio.get_running_loop()
            seen.append(False)
        except RuntimeError:  # no event loop in this thread: a worker thread
            seen.append(True)
        return parse(body)

    monkeypatch.setitem(bodypool.PARSERS, "chat", watched)
    _, key = make_key(user)

    response = _post(client, key, model="no-such-model", messages=[{"role": "user", "content": "x " * (size // 2)}])

    assert response.status_code == 404
    assert seen == [off_loop]


# --- The meter and the response, with a call played by the test ------------------------------


class PlayedCall:
    """Stands in for an InferenceCall: yields the given events, then reports the node's usage."""

    def __init__(self, meter: UsageMeter, events: list[dict], usage: dict) -> None:
        self.meter = meter
        self.job = SimpleNamespace(n=1)
        self._events = events
        self._final = usage
        self.usage = None
        self.cancelled = False

    async def events(self):
        for event in self._events:
            self.meter.completion_tokens += count_tokens(event["t"])  # the provisional count
            yield event
        self.usage = self._final
        self.meter.prompt_tokens = self._final["prompt_tokens"]
        self.meter.completion_tokens = self._final["completion_tokens"]

    async def cancel(self) -> None:
        self.cancelled = True


EVENTS = [
    {"i": 0, "t": "Hello", "f": None},
    {"i": 0, "t": " world", "f": None},
    {"i": 0, "t": " again", "f": "length"},
]
USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


def _meter(api_key, model, request_id: str, *, stream: bool, max_tokens: int = 3) -> UsageMeter:
    meter = UsageMeter(SimpleNamespace(api_key=api_key, request_id=request_id), endpoint="chat.completions")
    meter.model, meter.model_name, meter.stream, meter.prompt_tokens = model, model.model_id, stream, 10
    async_to_sync(meter.admit)(model, prompt_tokens=10, max_tokens=max_tokens)
    return meter


def _cost(model, prompt_tokens, completion_tokens) -> Decimal:
    return request_cost(model.price_versions.latest("effective_from"), prompt_tokens, completion_tokens)


def test_a_whole_answer_carries_its_cost_and_is_charged_once(user, make_key, model):
    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_whole", stream=False)
    completion = ChatCompletion(PlayedCall(meter, EVENTS, USAGE), model.model_id, include_usage=False)

    body = async_to_sync(completion.collect)()
    async_to_sync(meter.record)(500, "server_error")  # a second record changes nothing

    record = UsageRecord.objects.get(request_id="req_whole")
    assert (record.status_code, record.prompt_tokens, record.completion_tokens) == (200, 10, 3)
    assert record.cost == _cost(model, 10, 3) > 0
    assert body["usage"] == {**USAGE, "cost": float(record.cost)}
    assert _charges().get().amount == -record.cost
    assert reconciliation_differences() == []


def test_the_usage_chunk_of_a_stream_carries_its_cost(user, make_key, model):
    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_stream", stream=True)
    completion = ChatCompletion(PlayedCall(meter, EVENTS, USAGE), model.model_id, include_usage=True)

    async def read():
        return [chunk async for chunk in completion.stream()]

    chunks = async_to_sync(read)()

    assert chunks[-1] == b"data: [DONE]\n\n"
    usage = json.loads(chunks[-2].decode().removeprefix("data: "))["usage"]
    record = UsageRecord.objects.get(request_id="req_stream")
    assert usage == {**USAGE, "cost": float(record.cost)}
    assert record.cost == _cost(model, 10, 3)


def test_an_explicit_zero_from_the_engine_stays_zero(user, make_key, model):
    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_zero", stream=False)
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    completion = ChatCompletion(PlayedCall(meter, EVENTS, zero), model.model_id, include_usage=False)

    body = async_to_sync(completion.collect)()

    record = UsageRecord.objects.get(request_id="req_zero")
    assert (record.prompt_tokens, record.completion_tokens, record.cost) == (0, 0, 0)
    assert body["usage"]["cost"] == 0
    assert not _charges().exists()


def test_a_client_gone_mid_stream_pays_for_the_text_it_was_sent(user, make_key, model):
    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_gone", stream=True, max_tokens=100)
    call = PlayedCall(meter, EVENTS, USAGE)
    completion = ChatCompletion(call, model.model_id, include_usage=True)

    async def read_two_deltas_and_leave():
        stream = completion.stream()
        received = [await anext(stream) for _ in range(3)]  # the role chunk, "Hello", " world"
        await stream.aclose()
        return received

    received = async_to_sync(read_two_deltas_and_leave)()

    assert b"world" in received[-1]
    assert call.cancelled
    record = UsageRecord.objects.get(request_id="req_gone")
    assert (record.status_code, record.error_code) == (499, "client_closed_request")
    assert record.completion_tokens == 2
    assert record.cost == _cost(model, 10, 2) > 0
    assert _charges().get().amount == -record.cost
    assert _reserved(user)[f"n:{api_key.pk}"] == 0


def test_a_failure_before_any_output_is_not_charged(user, make_key, model):
    from gpucloud.openai_errors import ApiError

    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_failed", stream=True)

    class FailingCall(PlayedCall):
        async def events(self):
            raise ApiError("The GPU node went away.", status=502, type="server_error", code="worker_lost")
            yield  # an async generator

    completion = ChatCompletion(FailingCall(meter, [], USAGE), model.model_id, include_usage=True)

    async def read():
        return [chunk async for chunk in completion.stream()]

    chunks = async_to_sync(read)()

    assert b"worker_lost" in chunks[-2]
    record = UsageRecord.objects.get(request_id="req_failed")
    assert (record.status_code, record.cost) == (502, 0)
    assert not _charges().exists()
    assert _reserved(user)[f"n:{api_key.pk}"] == 0


def test_a_whole_answer_that_fails_after_output_is_not_charged(user, make_key, model):
    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_whole_failed", stream=False)
    meter.completion_tokens = 2  # text was produced, but a non-streamed client gets none of it

    async_to_sync(meter.record)(502, "worker_lost")

    assert UsageRecord.objects.get(request_id="req_whole_failed").cost == 0
    assert not _charges().exists()


def test_a_client_gone_during_admission_leaves_no_reservation(user, make_key, model):
    api_key, _ = make_key(user, max_parallel=1)
    meter = UsageMeter(SimpleNamespace(api_key=api_key, request_id="req_left_early"), endpoint="chat.completions")
    meter.model, meter.model_name = model, model.model_id

    async def leave_while_admitting():
        async with meter.failures():
            admitting = asyncio.ensure_future(meter.admit(model, prompt_tokens=10, max_tokens=10))
            await asyncio.sleep(0)  # the reservation is on its way
            admitting.cancel()
            await admitting

    with pytest.raises(asyncio.CancelledError):
        async_to_sync(leave_while_admitting)()

    record = UsageRecord.objects.get(request_id="req_left_early")
    assert (record.status_code, record.cost) == (499, 0)
    assert _reserved(user)[f"n:{api_key.pk}"] == 0


def test_a_stream_cut_short_by_an_error_pays_for_the_text_it_was_sent(user, make_key, model):
    from gpucloud.openai_errors import ApiError

    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_cut", stream=True, max_tokens=100)

    class CutCall(PlayedCall):
        async def events(self):
            for event in self._events[:2]:
                self.meter.completion_tokens += count_tokens(event["t"])
                yield event
            raise ApiError("The GPU node went away.", status=502, type="server_error", code="worker_lost")

    completion = ChatCompletion(CutCall(meter, EVENTS, USAGE), model.model_id, include_usage=True)

    async def read():
        return [chunk async for chunk in completion.stream()]

    chunks = async_to_sync(read)()

    assert b"worker_lost" in chunks[-2]
    record = UsageRecord.objects.get(request_id="req_cut")
    assert (record.status_code, record.completion_tokens) == (502, 2)  # "Hello", " world"
    assert record.cost == _cost(model, 10, 2)
    assert _charges().get().amount == -record.cost


def test_a_client_gone_before_a_whole_answer_pays_nothing(user, make_key, model):
    api_key, _ = make_key(user)
    meter = _meter(api_key, model, "req_impatient", stream=False, max_tokens=100)

    class SlowCall(PlayedCall):
        async def events(self):
            yield EVENTS[0]
            self.meter.completion_tokens += 1
            await asyncio.Event().wait()  # the rest never comes

    call = SlowCall(meter, EVENTS, USAGE)
    completion = ChatCompletion(call, model.model_id, include_usage=False)

    async def leave():
        collecting = asyncio.ensure_future(completion.collect())
        await asyncio.sleep(0.05)
        collecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await collecting

    async_to_sync(leave)()

    assert call.cancelled
    record = UsageRecord.objects.get(request_id="req_impatient")
    assert (record.status_code, record.cost) == (499, 0)
    assert not _charges().exists()
    assert _reserved(user)[f"n:{api_key.pk}"] == 0

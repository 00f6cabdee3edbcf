"""Fuzzing every POST/PATCH API endpoint with generated bodies: no 5xx, every error in the OpenAI shape.

Hypothesis builds bodies four ways: any JSON value; a valid request with one field replaced by any
JSON value (or an unknown field added); hostile JSON text (deep nesting, huge integers, lone
surrogates, NUL, non-finite numbers, truncation); and raw bytes. Some go with a content type that
is not JSON. Requests run in-process through Django's test client (the ASGI views under
``async_to_sync``), so a few thousand take seconds. A request that passes validation would wait
for a GPU worker: the queue timeout is tiny here, so it answers the expected 503.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.models import Deployment
from gpucloud.redis_client import get_redis

pytestmark = pytest.mark.django_db

EXAMPLES_PER_ENDPOINT = 400
# The only 5xx a client may see: nobody takes the request in time (no worker runs in this test).
EXPECTED_503 = {"no_worker_available", "model_not_ready"}

VALID = {
    "chat": {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    "completions": {"model": "llama-3.1-8b-instruct", "prompt": "Once", "max_tokens": 4},
    "embeddings": {"model": "llama-3.1-8b-instruct", "input": "hello"},
    "deployments": {"name": "fuzzed", "model": "mistral-7b-instruct-v0.3", "precision": "int4", "replicas": 1},
    "deployment": {"replicas": 1, "engine_config": {}, "precision": "fp16", "placement": "binpack"},
    "register": {"token": "gpcj_000000000000_" + "x" * 40, "name": "node", "slots": 1, "gpus": []},
    "keys": {"name": "fuzzed", "scopes": ["inference"], "rpm": 10},
}
ENDPOINTS = {
    "chat": ("post", "/v1/chat/completions"),
    "completions": ("post", "/v1/completions"),
    "embeddings": ("post", "/v1/embeddings"),
    "deployments": ("post", "/api/deployments"),
    "deployment": ("patch", "/api/deployments/llama-3-1-8b-instruct"),
    "register": ("post", "/api/workers/register"),
    "keys": ("post", "/api/keys"),
}

# Strings with what breaks encoders and databases, among ordinary text.
odd_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", "\ufeff", "😀", "", " ", "null", "-1", "1e999"]),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 64, 65, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(odd_text, children, max_size=4)),
    max_leaves=12,
)


def _dump(value) -> bytes:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as a client's JSON would carry them.
    return json.dumps(value, ensure_ascii=True).encode()


@st.composite
def mutated(draw, endpoint: str) -> bytes:
    """A valid body with one field replaced, removed or added."""
    body = json.loads(json.dumps(VALID[endpoint]))
    field = draw(st.sampled_from([*body, "messages.0.role", "messages.0.content", "stream", "n", "extra"]))
    action = draw(st.sampled_from(["replace", "replace", "remove"]))
    if field.startswith("messages.") and "messages" in body:
        _, index, key = field.split(".")
        target = body["messages"][int(index)]
        if action == "remove":
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    elif action == "remove":
        body.pop(field, None)
    else:
        body[field] = draw(json_values)
    return _dump(body)


hostile_text = st.one_of(
    st.integers(min_value=65, max_value=20_000).map(lambda n: b'{"model": ' + b"[" * n + b"]" * n + b"}"),
    st.integers(min_value=1, max_value=6_000).map(lambda n: b'{"max_tokens": ' + b"9" * n + b"}"),
    st.sampled_from(
        [
            b'{"model": "\\ud800", "messages": [{"role": "user", "content": "x"}]}',
            b'{"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "\\udc00"}]}',
            b'{"model": "llama-3.1-8b-instruct", "prompt": "\\u0000", "input": "\\u0000"}',
            b'{"temperature": NaN}',
            b'{"temperature": Infinity, "top_p": -Infinity}',
            b'{"n": 1e400}',
            b'{"replicas": 1e308, "engine_config": 1e308}',
            b'{"engine_config": "1"}',
            b'{"engine_config": true}',
            b'{"engine_config": {"api_key": "sk-x"}}',
            b'{"gpus": [{"index": 1e999, "name": "\\ud800", "memory_total_mb": -1}]}',
            b"",
            b"null",
            b"[]",
            b'"string"',
            b"{",
            b"\xff\xfe\x00\x00",
            b"\xef\xbb\xbf{}",
        ]
    ),
    st.binary(max_size=64),
)


def bodies(endpoint: str):
    return st.one_of(json_values.map(_dump), mutated(endpoint), mutated(endpoint), hostile_text)


content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json"),
    st.just("application/json"),
    st.sampled_from(
        [
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/json; charset=latin-1",
        ]
    ),
)


def assert_openai_error(response, body: bytes) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), (response.status_code, body[:200])
    error = json.loads(response.content)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    return error


@pytest.fixture
def fuzz_client(client, staff, make_key, settings, catalog):
    """A client with an operator's key (so every endpoint gets past auth) and no waiting for workers."""
    settings.INFERENCE_QUEUE_TIMEOUT = 0.01
    settings.RATELIMIT_ENABLE = False  # thousands of requests from one key
    _, key = make_key(staff)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    yield client
    # Requests that passed validation left their jobs in the deployments' queues: empty them for the
    # tests that count what waits there.
    redis = get_redis()
    for deployment in Deployment.objects.all():
        for name in redis.scan_iter(match=f"{deployment.queue_name}*"):
            redis.delete(name)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_no_body_causes_a_5xx(fuzz_client, endpoint):
    method, path = ENDPOINTS[endpoint]
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES_PER_ENDPOINT,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=bodies(endpoint), content_type=content_types)
    def check(body: bytes, content_type: str):
        # generic(): the body goes out byte for byte, whatever charset the content type claims.
        response = fuzz_client.generic(method.upper(), path, data=body, content_type=content_type)
        statuses[response.status_code] += 1
        # (The test client closes the response itself; closing it again would close the test's database.)
        if response.status_code >= 400:
            error = assert_openai_error(response, body)
            if response.status_code >= 500:
                assert response.status_code == 503 and error["code"] in EXPECTED_503, (error, body[:200])

    check()
    print(f"{endpoint}: {dict(sorted(statuses.items()))}")  # the status histogram, with -s

    assert sum(statuses.values()) >= EXAMPLES_PER_ENDPOINT // 2
    assert all(status < 500 or status == 503 for status in statuses), statuses

"""Fuzzing the API endpoints against the live server (Daphne, the real GPU node, billing) with the
generated bodies of test_fuzz_api: no 5xx, every error in the OpenAI shape.

A module of its own, without pytest-django's database mark: the live platform must start after
the tests that flush the database (transactional ones), as every live test does.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from gpucloud.tests.test_fuzz_api import ENDPOINTS, assert_openai_error, bodies, content_types

pytestmark = pytest.mark.live


# Every endpoint that changes nothing shared: deployments are fuzzed in-process (test_fuzz_api),
# inside a transaction.
LIVE_ENDPOINTS = ["chat", "completions", "embeddings", "register", "keys"]
LIVE_EXAMPLES_PER_ENDPOINT = 150


@pytest.mark.parametrize("endpoint", LIVE_ENDPOINTS)
def test_no_body_causes_a_5xx_on_the_live_server(live, make_key, endpoint):
    method, path = ENDPOINTS[endpoint]
    _, key = make_key(live.user, rpm=100_000)
    statuses: Counter[int] = Counter()
    http = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    @settings(
        max_examples=LIVE_EXAMPLES_PER_ENDPOINT,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=bodies(endpoint), content_type=content_types)
    def check(body: bytes, content_type: str):
        response = http.request(method.upper(), path, content=body, headers={"Content-Type": content_type})
        statuses[response.status_code] += 1
        if response.status_code >= 400:
            error = assert_openai_error(response, body)
            assert response.status_code < 500, (response.status_code, error, body[:200])

    try:
        check()
    finally:
        http.close()
    print(f"live {endpoint}: {dict(sorted(statuses.items()))}")

    assert sum(statuses.values()) >= LIVE_EXAMPLES_PER_ENDPOINT // 2

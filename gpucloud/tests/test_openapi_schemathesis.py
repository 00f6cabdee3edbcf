"""schemathesis, from the served OpenAPI schema, against a live platform (Daphne and a GPU node):
a bounded number of generated requests per operation, valid and invalid, none answered with a 5xx,
and every answer conforming to the schema (documented status, content type and body)."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.live

# The live platform's chat models: some generated requests name one, so they reach the GPU node.
CHAT_MODELS = ("llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3")
MAX_TOKENS = 8  # generated requests stay short: the simulated node paces its output like a GPU
EXAMPLES = 10  # generated requests per operation (at most)
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_key(live) -> str:
    """A management and inference key of an operator of its own (its keys are the only ones its
    generated PATCH requests can reach)."""
    from accounts.models import ApiKey
    from accounts.services import api_key_create

    operator = get_user_model().objects.create_user("schemathesis", password="a long password", is_staff=True)
    _, key = api_key_create(
        user=operator, name="schemathesis", scopes=[ApiKey.Scope.INFERENCE, ApiKey.Scope.MANAGEMENT], rpm=5000
    )
    return key


def _short(body) -> None:
    """Keep a generated body's work on the node small, and let some name a served model."""
    if not isinstance(body, dict):
        return
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int) and not isinstance(body[name], bool) and body[name] > MAX_TOKENS:
            body[name] = MAX_TOKENS
    if isinstance(body.get("n"), int) and not isinstance(body["n"], bool) and body["n"] > 2:
        body["n"] = 2
    model = body.get("model")
    if isinstance(model, str) and ("messages" in body or "prompt" in body):
        choice = zlib.crc32(model.encode()) % 3  # deterministic: a third stay unknown models (404)
        if choice < len(CHAT_MODELS):
            body["model"] = CHAT_MODELS[choice]
            body.setdefault("max_tokens", MAX_TOKENS)


def _operations(schema) -> list:
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()  # raises on an operation schemathesis cannot read
        # DELETE revokes keys and deletes deployments: the live platform is shared with other tests.
        if operation.method.upper() != "DELETE":
            operations.append(operation)
    return operations


def test_no_server_errors_and_answers_as_documented(live, api_key):
    """Each operation: up to EXAMPLES generated requests, valid ones and invalid ones.

    (schemathesis's own pytest loader for a schema from a fixture does not run under pytest 9, so
    the operations' hypothesis strategies are driven here.)"""
    schema = schemathesis.openapi.from_url(f"{live.url}/api/schema")
    operations = _operations(schema)
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings", "GET /v1/models",
        "GET /api/usage", "POST /api/keys", "PATCH /api/deployments/{name}",
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {api_key}"}
    failures, statuses = [], Counter()
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            _short(case.body)
            response = case.call(base_url=live.url, headers=headers, timeout=60)
            statuses[response.status_code] += 1
            assert response.status_code < 500, f"{response.status_code} {response.text[:300]}"
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Exception as error:  # every operation runs; all failures are reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {type(error).__name__}: {error}"[:2000])
    print(f"statuses: {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    assert statuses[200] > 0 and sum(statuses.values()) >= len(operations)

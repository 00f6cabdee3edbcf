"""The OpenAPI schema: valid OpenAPI 3.1, generated without a warning, covering /v1 and /api, served
publicly at /api/schema, and rendered at /docs/ by the vendored Swagger UI under the site's CSP."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from drf_spectacular.validation import validate_schema

from gpucloud.openapi import RESPONSE_SCHEMAS, add_v1_paths, request_model_schemas
from inference import schemas

V1_PATHS = {"/v1/models", "/v1/models/{model}", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
API_PATHS = {
    "/api/usage", "/api/keys", "/api/keys/{key_id}", "/api/balance", "/api/ledger", "/api/workers",
    "/api/workers/register", "/api/queues", "/api/deployments", "/api/deployments/{name}",
}  # fmt: skip


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """The schema as `manage.py spectacular --validate --fail-on-warn` writes it: it raises if the
    schema is not valid OpenAPI or any view could not be described."""
    target = tmp_path_factory.mktemp("openapi") / "schema.json"
    call_command("spectacular", "--validate", "--fail-on-warn", "--format=openapi-json", f"--file={target}")
    return json.loads(target.read_text())


def _refs(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


def test_it_is_valid_openapi_3_1(schema):
    assert schema["openapi"].startswith("3.1")
    validate_schema(schema)  # again, explicitly


def test_it_covers_v1_and_api(schema):
    assert set(schema["paths"]) >= V1_PATHS | API_PATHS
    assert not [p for p in schema["paths"] if not p.startswith(("/v1/", "/api/"))]
    operations = [op for item in schema["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))


def test_every_reference_resolves(schema):
    components = schema["components"]["schemas"]
    for ref in _refs(schema):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in components, ref


def test_v1_request_bodies_are_the_request_models(schema):
    components = schema["components"]["schemas"]
    bodies = {
        "/v1/chat/completions": schemas.ChatCompletionRequest,
        "/v1/completions": schemas.CompletionRequest,
        "/v1/embeddings": schemas.EmbeddingRequest,
    }
    for path, model in bodies.items():
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model.__name__}"}
        expected = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in expected.pop("$defs", {}).items():
            assert components[name] == definition
        assert components[model.__name__] == expected
    assert set(request_model_schemas()) <= set(components)


def test_every_operation_documents_openai_errors_and_the_bearer_key(schema):
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path != "/api/workers/register":  # a node joins with its join token, in the body
                assert operation["security"] == [{"ApiKeyAuth": []}], (method, path)
            errors = {status: r for status, r in operation["responses"].items() if status.startswith(("4", "5"))}
            assert "401" in errors, (method, path)
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            successes = [status for status in operation["responses"] if status.startswith("2")]
            assert successes, (method, path)


def test_streaming_endpoints_document_server_sent_events(schema):
    for path in ("/v1/chat/completions", "/v1/completions"):
        content = schema["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}


@pytest.mark.django_db
def test_it_is_served_publicly_at_api_schema(client, schema):
    response = client.get("/api/schema")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    served = response.json()
    validate_schema(served)
    assert set(served["paths"]) == set(schema["paths"])


@pytest.mark.django_db
def test_docs_page_uses_vendored_files_and_no_inline_code(client):
    response = client.get("/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui-bundle.js" in s for s in sources)
    assert all(s.startswith("/") and not s.startswith("//") for s in sources), sources  # nothing from a CDN
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert "<style" not in html and "style=" not in html
    for source in sources:
        path = source.split("?")[0]
        if path.startswith("/static/"):  # shipped: in this repository or an installed app's static files
            assert finders.find(path.removeprefix("/static/")), path
    script = client.get("/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert '"/api/schema"' in script.content.decode()


def test_v1_schemas_never_replace_a_component_of_the_same_name():
    """A DRF component named like a /v1 response shape or request model keeps its name; the /v1
    one is prefixed, and every reference follows."""
    theirs = {"Usage": {"type": "object", "title": "drf usage"}, "CompletionRequest": {"type": "string"}}
    result = add_v1_paths({"paths": {}, "components": {"schemas": dict(theirs)}}, None, None, True)
    components = result["components"]["schemas"]
    assert components["Usage"] == theirs["Usage"]
    assert components["CompletionRequest"] == theirs["CompletionRequest"]
    assert components["V1Usage"] == RESPONSE_SCHEMAS["Usage"]
    assert components["V1CompletionRequest"]["title"] == "CompletionRequest"
    body = result["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/V1CompletionRequest"}
    assert components["ChatCompletion"]["properties"]["usage"] == {"$ref": "#/components/schemas/V1Usage"}
    for ref in _refs(result):
        assert ref.removeprefix("#/components/schemas/") in components or ref.endswith("/Error"), ref

"""Which optional generation features each engine honours, and which JSON-schema keywords the
simulated engine's schema-driven generator enforces.

Shared by the web tier (a request using what its deployment's engine cannot honour is a 400
naming the param, never silently ignored) and the node (the generator refuses the same schemas).
"""

from __future__ import annotations

# Features a request may ask for beyond plain text sampling.
FEATURES = frozenset(
    {"tools", "json_object", "json_schema", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}
)
ENGINE_FEATURES: dict[str, frozenset[str]] = {
    "simulated": FEATURES,
    "openai": FEATURES,  # passed through to the upstream server, which says what it cannot do
    "hf": frozenset(),  # embeddings only
}

# Keywords the generator produces values for (or that say nothing about the value).
SCHEMA_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
        "$ref", "$defs", "definitions", "minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minLength", "maxLength", "description", "title", "default", "examples",
        "$schema", "$id", "$comment", "strict",
    }
)  # fmt: skip
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


def unsupported_schema_keywords(schema: object) -> list[str]:
    """The keywords of ``schema`` (anywhere in it) the generator cannot enforce, sorted."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key not in SCHEMA_KEYWORDS:
                found.add(key)
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                for sub in value.values():
                    walk(sub)
            elif key in ("items", "additionalProperties"):
                walk(value)
            elif key == "anyOf" and isinstance(value, list):
                for sub in value:
                    walk(sub)

    walk(schema)
    return sorted(found)

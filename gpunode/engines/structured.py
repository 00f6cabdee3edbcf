"""A schema-driven generator: a random JSON value that validates against a JSON schema.

The simulated engine writes tool-call arguments, JSON-mode answers and ``json_schema`` answers
with it. It understands the keywords in :data:`nodeprotocol.structured.SCHEMA_KEYWORDS` (types,
properties and required, items, enum and const, anyOf, local ``$ref``, and the size and range
bounds); a schema with any other keyword is refused before it gets here, since its output could
not be guaranteed to validate.
"""

from __future__ import annotations

import math
import random
import re

from nodeprotocol.structured import unsupported_schema_keywords

WORDS = (
    "alpha bravo cloud delta echo fast GPU kernel latency model node open queue replica stream tensor "
    "vector worker yield zone"
).split()
MAX_DEPTH = 6
# Bounds on what a schema may make it produce (a hostile minItems or minLength must not exhaust the node).
MAX_MIN_ITEMS, MAX_MIN_LENGTH, MAX_VALUES = 256, 4096, 20_000
# A JSON text's tokens: a run of word characters (with the whitespace before it), or one other character.
JSON_TOKEN_RE = re.compile(r"\s*[\w.+-]+|\s*[^\w\s]")


class UnsupportedSchema(ValueError):
    """The schema uses keywords the generator cannot enforce."""


def check(schema: dict) -> None:
    unsupported = unsupported_schema_keywords(schema)
    if unsupported:
        raise UnsupportedSchema(f"the JSON schema keyword(s) {', '.join(unsupported)} cannot be enforced")


def json_tokens(text: str) -> list[str]:
    """``text`` cut into tokens that join back to it exactly."""
    tokens = JSON_TOKEN_RE.findall(text)
    if "".join(tokens) != text:  # whitespace at the end, which json.dumps never writes
        tokens.append(text[len("".join(tokens)) :])
    return tokens


def _resolve(ref: str, root: dict) -> dict:
    node: object = root
    for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise UnsupportedSchema(f"the reference {ref!r} does not resolve within the schema")
        node = node[part]
    if not isinstance(node, dict):
        raise UnsupportedSchema(f"the reference {ref!r} is not a schema")
    return node


def _string(schema: dict, rng: random.Random) -> str:
    low = int(schema.get("minLength", 0))
    if low > MAX_MIN_LENGTH:
        raise UnsupportedSchema(f"minLength above {MAX_MIN_LENGTH} cannot be generated")
    high = int(schema.get("maxLength", max(low, 24)))
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    while len(text) < low:
        text += " " + rng.choice(WORDS)
    return text[: max(high, low)] if len(text) > high else text


def _number(schema: dict, rng: random.Random, integer: bool) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    exclusive_low, exclusive_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if integer:
        lo = math.ceil(low) if low is not None else None
        if exclusive_low is not None:
            lo = max(lo, math.floor(exclusive_low) + 1) if lo is not None else math.floor(exclusive_low) + 1
        hi = math.floor(high) if high is not None else None
        if exclusive_high is not None:
            hi = min(hi, math.ceil(exclusive_high) - 1) if hi is not None else math.ceil(exclusive_high) - 1
        lo = lo if lo is not None else (hi - 100 if hi is not None else 0)
        hi = hi if hi is not None else lo + 100
        return rng.randint(lo, max(lo, hi))
    lo = low if low is not None else exclusive_low
    hi = high if high is not None else exclusive_high
    lo = lo if lo is not None else (hi - 100.0 if hi is not None else 0.0)
    hi = hi if hi is not None else lo + 100.0
    for _ in range(20):
        value = round(rng.uniform(lo, hi), 2)
        if (
            (low is None or value >= low)
            and (high is None or value <= high)
            and (exclusive_low is None or value > exclusive_low)
            and (exclusive_high is None or value < exclusive_high)
        ):
            return value
    return (lo + hi) / 2


def generate_value(schema: dict | bool, rng: random.Random, root: dict | None = None, depth: int = 0,
                   budget: list[int] | None = None):  # fmt: skip
    """A value valid against ``schema`` (whose ``$ref``s resolve in ``root``), of at most
    MAX_VALUES values in all (``budget`` counts them down)."""
    budget = budget if budget is not None else [MAX_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise UnsupportedSchema(f"the schema asks for more than {MAX_VALUES} values")
    if schema is True or (schema == {} and depth == 0):
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise UnsupportedSchema("a schema of false admits no value")
    root = root if root is not None else schema
    if "$ref" in schema:
        if depth > 3 * MAX_DEPTH:
            raise UnsupportedSchema("the schema recurses without end")
        return generate_value(_resolve(schema["$ref"], root), rng, root, depth + 1, budget)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema:
        options = schema["anyOf"]
        # Deep down, the first option (often the non-recursive one) ends the recursion.
        return generate_value(options[0] if depth > MAX_DEPTH else rng.choice(options), rng, root, depth + 1, budget)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind) if depth <= MAX_DEPTH or "null" not in kind else "null"
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        value = {}
        for name, sub in properties.items():
            if name in required or (depth < MAX_DEPTH and rng.random() < 0.5):
                value[name] = generate_value(sub, rng, root, depth + 1, budget)
        for name in required:
            if name not in value:
                extra = schema.get("additionalProperties")
                sub = extra if isinstance(extra, dict) else {"type": "string"}
                value[name] = generate_value(sub, rng, root, depth + 1, budget)
        if not properties and not required and schema.get("additionalProperties") is not False and depth == 0:
            extra = schema.get("additionalProperties")
            sub = extra if isinstance(extra, dict) else {"type": "string"}
            for _ in range(rng.randint(1, 3)):
                value[rng.choice(WORDS).lower()] = generate_value(sub, rng, root, depth + 1, budget)
        return value
    if kind == "array":
        low = int(schema.get("minItems", 0))
        if low > MAX_MIN_ITEMS:
            raise UnsupportedSchema(f"minItems above {MAX_MIN_ITEMS} cannot be generated")
        high = int(schema.get("maxItems", low + 3))
        count = low if depth > MAX_DEPTH else rng.randint(low, max(low, min(high, low + 3)))
        items = schema.get("items", {"type": "string"})
        return [generate_value(items, rng, root, depth + 1, budget) for _ in range(count)]
    if kind == "string":
        return _string(schema, rng)
    if kind == "integer":
        return _number(schema, rng, integer=True)
    if kind == "number":
        return _number(schema, rng, integer=False)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise UnsupportedSchema(f"unknown type {kind!r}")

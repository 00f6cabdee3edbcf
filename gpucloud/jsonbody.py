"""Bounded JSON request bodies: the one place a client's JSON is parsed.

``json.loads`` alone lets a client reach code that was never meant for its input: JSON nested a
thousand levels deep raises RecursionError (here or in whatever walks the result), an integer of
5,000 digits raises ValueError (Python's int-string limit), ``1e999`` becomes ``inf``, which no
JSON encoder writes back, and a lone surrogate (``"\\ud800"``) or a NUL byte breaks UTF-8
encoding and PostgreSQL text further on. :func:`parse_json` bounds all of these and answers an
:class:`~gpucloud.openai_errors.ApiError` (400 naming the ``param``, or 413) instead. The OpenAI
views call it through ``inference.validation``; DRF calls it through :class:`BoundedJSONParser`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings

from gpucloud.openai_errors import ApiError, invalid_request

MAX_DEPTH = 64
# Far above any count or seed a client sends, far below Python's 4,300-digit limit.
MAX_INT_DIGITS = 100
JSON_CONTENT_TYPES = ("application/json",)
_WALKED = {str, dict, list}  # what check_value looks into


class _Rejected(Exception):
    """A number json.loads must not turn into a value; becomes a 400."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Rejected(f"An integer in the body has more than {MAX_INT_DIGITS} digits.")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"The number {text[:40]} is out of range.")
    return value


def _parse_constant(name: str):
    raise _Rejected(f"{name} is not valid JSON; send a number.")


def too_large(limit: int) -> ApiError:
    return ApiError(
        f"The request body is larger than this server accepts ({limit / 1_000_000:g} MB). Send less per request.",
        status=413,
        code="request_too_large",
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        f"Unsupported content type: '{content_type[:100]}'. This API accepts only 'application/json' bodies; "
        "send the header 'Content-Type: application/json'.",
        status=415,
        code="unsupported_media_type",
    )


def is_json_content_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type (parameters such as charset aside); blank counts too."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "" or media_type in JSON_CONTENT_TYPES or media_type.endswith("+json")


def _param(node) -> str | None:
    """``messages[0].content`` for the path ``node`` (a chain of (parent, key) pairs)."""
    keys = []
    while node is not None:
        node, key = node
        keys.append(key)
    text = ""
    for key in reversed(keys):
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text or None


def _check_string(text: str, node) -> None:
    if "\x00" in text:
        raise invalid_request("Strings must not contain NUL (\\u0000) characters.", param=_param(node))
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_request(
            "Strings must be valid Unicode: this one holds a lone surrogate (e.g. \\ud800 without its pair).",
            param=_param(node),
        ) from None


def check_value(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Walk a parsed value without recursion: bound its depth and check every string and key.

    Paths are chains of (parent, key) pairs, built only for what is walked and spelled out only
    for an error, so a body of millions of numbers costs one pass.
    """
    if isinstance(value, str):
        _check_string(value, None)
        return
    stack: list[tuple[Any, Any, int]] = [(value, None, 0)] if isinstance(value, dict | list) else []
    while stack:
        item, node, depth = stack.pop()
        if depth >= max_depth:
            raise invalid_request(f"The JSON body is nested more than {max_depth} levels deep.", param=_param(node))
        if isinstance(item, list) and not _WALKED.intersection(map(type, item)):
            continue  # numbers, booleans and nulls only: nothing to check (fast for huge arrays)
        for key, child in item.items() if isinstance(item, dict) else enumerate(item):
            if isinstance(key, str):
                _check_string(key, (node, key))
            if isinstance(child, str):
                _check_string(child, (node, key))
            elif isinstance(child, dict | list):
                stack.append((child, (node, key), depth + 1))


def parse_json(body: bytes | str, *, max_size: int | None = None, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON body within bounds; raises ApiError (400, or 413 past ``max_size`` bytes)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE if max_size is None else max_size
    if limit is not None and len(body) > limit:
        raise too_large(limit)
    if not body:
        raise invalid_request("The request body is empty; send a JSON object.")
    try:
        value = json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except _Rejected as error:
        raise invalid_request(str(error)) from None
    except RecursionError:
        raise invalid_request(f"The JSON body is nested more than {max_depth} levels deep.") from None
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise invalid_request(
            f"We could not parse the JSON body of your request ({str(error)[:200]}). Send valid JSON with "
            "'Content-Type: application/json'."
        ) from None
    check_value(value, max_depth=max_depth)
    return value


def parse_json_object(body: bytes | str, **bounds) -> dict:
    """:func:`parse_json`, for bodies that must be a JSON object."""
    value = parse_json(body, **bounds)
    if not isinstance(value, dict):
        raise invalid_request("The request body must be a JSON object.")
    return value


def _bounded_json_parser() -> type:
    from rest_framework.parsers import BaseParser

    class BoundedJSONParser(BaseParser):
        """DRF's JSON parser, with :func:`parse_json`'s bounds (set in REST_FRAMEWORK settings)."""

        media_type = "application/json"

        def parse(self, stream, media_type=None, parser_context=None):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            # DRF may hand over the raw request stream, which Django does not bound: read one byte past.
            body = stream.read(limit + 1 if limit is not None else -1)
            return parse_json(body, max_size=limit)

    BoundedJSONParser.__module__ = __name__
    return BoundedJSONParser


def __getattr__(name: str):
    # Built on first use: importing DRF's parsers reads Django's settings, and this module is also
    # used where Django is not set up (inference.bodypool's processes).
    if name == "BoundedJSONParser":
        globals()[name] = parser = _bounded_json_parser()
        return parser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

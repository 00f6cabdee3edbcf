"""gpucloud.jsonbody: JSON bodies within bounds, or an OpenAI-shaped 400/413."""

import io

import pytest

from gpucloud.jsonbody import MAX_DEPTH, BoundedJSONParser, is_json_content_type, parse_json, parse_json_object
from gpucloud.openai_errors import ApiError


def rejection(body, status: int = 400, **bounds) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json(body, **bounds)
    assert caught.value.status == status
    assert caught.value.type == "invalid_request_error"
    return caught.value


def test_it_works():
    assert parse_json(b'{"a": [1, 2.5, "x", null, true], "b": {"c": -3}}') == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": -3},
    }


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_it_refuses_deep_nesting_without_recursing(depth):
    # 100,000 levels would raise RecursionError in json.loads itself.
    error = rejection(("[" * depth + "]" * depth).encode())

    assert "nested" in error.message


def test_it_allows_nesting_up_to_the_bound():
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(nested.encode()) is not None

    error = rejection(('{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}").encode())
    assert error.param.startswith("a[0][0]")


def test_it_refuses_integers_past_the_bound():
    # Python refuses int strings over 4,300 digits with a ValueError of its own.
    error = rejection(b'{"max_tokens": ' + b"9" * 5000 + b"}")

    assert "digits" in error.message
    assert parse_json(b'{"seed": ' + b"9" * 100 + b"}")["seed"] == int("9" * 100)


@pytest.mark.parametrize("number", [b"1e999", b"-1e400", b"NaN", b"Infinity", b"-Infinity"])
def test_it_refuses_numbers_json_cannot_write_back(number):
    rejection(b'{"temperature": ' + number + b"}")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (rb'{"model": "\ud800"}', "model"),
        (rb'{"messages": [{"role": "user", "content": "a\udfffb"}]}', "messages[0].content"),
        (rb'{"input": ["ok", "\u0000"]}', "input[1]"),
        (rb'{"\ud800": 1}', "\ud800"),
    ],
)
def test_it_refuses_strings_that_cannot_be_encoded_or_stored(body, param):
    error = rejection(body)

    assert error.param == param


def test_it_accepts_surrogate_pairs():
    assert parse_json(rb'{"content": "\ud83d\ude00"}') == {"content": "\U0001f600"}


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe\xfa", b"{'a': 1}", b"[1,]"])
def test_it_refuses_what_is_not_json(body):
    rejection(body)


def test_it_refuses_a_body_past_the_size_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    error = rejection(b'{"a": "' + b"x" * 100 + b'"}', status=413)

    assert error.code == "request_too_large"


def test_parse_json_object_wants_an_object():
    with pytest.raises(ApiError, match="JSON object"):
        parse_json_object(b"[1, 2]")


@pytest.mark.parametrize(
    ("content_type", "json"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", True),
        ("", True),
        ("multipart/form-data; boundary=x", False),
        ("application/x-www-form-urlencoded", False),
        ("text/plain", False),
    ],
)
def test_is_json_content_type(content_type, json):
    assert is_json_content_type(content_type) is json


def test_the_drf_parser_applies_the_bounds(settings):
    parser = BoundedJSONParser()
    assert parser.parse(io.BytesIO(b'{"a": 1}')) == {"a": 1}
    with pytest.raises(ApiError):
        parser.parse(io.BytesIO(b"[" * 1000 + b"]" * 1000))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    with pytest.raises(ApiError) as caught:
        parser.parse(io.BytesIO(b'{"a": "' + b"x" * 100 + b'"}'))
    assert caught.value.status == 413

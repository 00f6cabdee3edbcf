"""inference.validation.parse_embedding_request: OpenAI's embeddings body, errors naming ``param``."""

from __future__ import annotations

import json

import pytest

from gpucloud.openai_errors import ApiError
from inference.validation import MAX_EMBEDDING_INPUTS, parse_embedding_request

MODEL = "sim-embed-384"


def _parse(**body):
    return parse_embedding_request(json.dumps({"model": MODEL, **body}).encode())


def test_it_accepts_a_string():
    request = _parse(input="Hello")
    assert (request.model, request.inputs, request.encoding_format, request.dimensions) == (
        MODEL,
        ["Hello"],
        "float",
        None,
    )


def test_it_accepts_an_array_of_strings_and_every_option():
    request = _parse(input=["a", "b"], encoding_format="base64", dimensions=384, user="u-1")
    assert (request.inputs, request.encoding_format, request.dimensions, request.user) == (
        ["a", "b"],
        "base64",
        384,
        "u-1",
    )


def test_it_takes_up_to_2048_inputs():
    assert len(_parse(input=["x"] * MAX_EMBEDDING_INPUTS).inputs) == 2048


def test_a_null_encoding_format_is_float():
    assert _parse(input="x", encoding_format=None).encoding_format == "float"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({}, "input", "Missing required parameter: 'input'"),
        ({"input": ""}, "input", "empty strings"),
        ({"input": []}, "input", "empty array"),
        ({"input": ["a", ""]}, "input[1]", "empty strings"),
        ({"input": ["a", 5]}, "input[1]", "must be a string"),
        ({"input": [1, 2, 3]}, "input", "Token-array inputs are not supported"),
        ({"input": [[1, 2], [3]]}, "input", "Token-array inputs are not supported"),
        ({"input": 42}, "input", "string or an array of strings"),
        ({"input": {"text": "x"}}, "input", "string or an array of strings"),
        ({"input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)}, "input", "at most 2048"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
        ({"input": "x", "dimensions": 0}, "dimensions", "at least 1"),
        ({"input": "x", "dimensions": "384"}, "dimensions", "integer"),
        ({"input": "x", "dimensions": True}, "dimensions", "integer"),
        ({"input": "x", "user": 7}, "user", "string"),
        ({"input": "x", "temperature": 0}, "temperature", "Unrecognized request argument"),
        ({"input": "x", "model": ""}, "model", "non-empty string"),
    ],
)
def test_it_rejects_bad_values_naming_the_param(body, param, message):
    with pytest.raises(ApiError) as error:
        _parse(**body)
    assert error.value.status == 400
    assert error.value.type == "invalid_request_error"
    assert error.value.param == param
    assert message in error.value.message


def test_it_needs_a_model():
    with pytest.raises(ApiError) as error:
        parse_embedding_request(b'{"input": "x"}')
    assert error.value.param == "model"


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]"])
def test_it_needs_a_json_object(body):
    with pytest.raises(ApiError) as error:
        parse_embedding_request(body)
    assert error.value.status == 400

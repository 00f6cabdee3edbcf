"""inference.validation: chat completion request bodies."""

import json

import pytest

from gpucloud.openai_errors import ApiError
from inference.validation import ChatRequest, parse_chat_request

GOOD = {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "Hello"}]}


def body(**changes) -> bytes:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def rejection(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(raw)
    error = caught.value
    assert error.status == 400
    assert error.type == "invalid_request_error"
    assert error.message
    return error


def test_it_works():
    chat = parse_chat_request(body())

    assert chat == ChatRequest(model="llama-3.1-8b-instruct", messages=[{"role": "user", "content": "Hello"}])


def test_it_accepts_every_parameter():
    chat = parse_chat_request(
        body(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": None},
            ],
            max_tokens=50,
            temperature=0,
            top_p=0.5,
            n=8,
            stop=["\n", "END"],
            seed=42,
            user="u-1",
            stream=True,
            stream_options={"include_usage": True},
            frequency_penalty=0.5,
            presence_penalty=-0.5,
            logprobs=False,
        )
    )

    assert chat.messages[2] == {"role": "assistant", "content": ""}
    assert chat.max_tokens == 50
    assert chat.temperature == 0.0
    assert chat.top_p == 0.5
    assert chat.n == 8
    assert chat.stop == ["\n", "END"]
    assert chat.seed == 42
    assert chat.user == "u-1"
    assert chat.stream is True
    assert chat.include_usage is True


def test_it_accepts_a_list_of_text_parts():
    content = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]

    chat = parse_chat_request(body(messages=[{"role": "user", "content": content}]))

    assert chat.messages == [{"role": "user", "content": "first\nsecond"}]


def test_it_accepts_a_single_stop_string():
    assert parse_chat_request(body(stop="END")).stop == ["END"]


def test_it_takes_max_completion_tokens():
    assert parse_chat_request(body(max_completion_tokens=12)).max_tokens == 12


@pytest.mark.parametrize("raw", [b"", b"{", b"{'model': 'x'}", b"\xff\xfe", b"model=x"])
def test_it_rejects_malformed_json(raw):
    assert rejection(raw).param is None


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"42", b"null"])
def test_it_rejects_a_body_that_is_not_an_object(raw):
    error = rejection(raw)

    assert error.param is None
    assert "JSON object" in error.message


def test_it_rejects_a_missing_model():
    assert rejection(body(model=...)).param == "model"


@pytest.mark.parametrize("model", ["", "  ", 42, ["x"]])
def test_it_rejects_a_bad_model(model):
    assert rejection(body(model=model)).param == "model"


def test_it_rejects_missing_messages():
    assert rejection(body(messages=...)).param == "messages"


@pytest.mark.parametrize("messages", [[], "hello", {"role": "user", "content": "x"}])
def test_it_rejects_empty_or_non_list_messages(messages):
    assert rejection(body(messages=messages)).param == "messages"


def test_it_rejects_a_message_that_is_not_an_object():
    assert rejection(body(messages=[{"role": "user", "content": "x"}, "hi"])).param == "messages[1]"


@pytest.mark.parametrize("role", ["robot", "", None, "USER"])
def test_it_rejects_a_bad_role(role):
    assert rejection(body(messages=[{"role": role, "content": "x"}])).param == "messages[0].role"


def test_it_rejects_a_missing_content():
    assert rejection(body(messages=[{"role": "user"}])).param == "messages[0].content"


@pytest.mark.parametrize("content", [None, 42, {"type": "text", "text": "x"}])
def test_it_rejects_bad_content(content):
    assert rejection(body(messages=[{"role": "user", "content": content}])).param == "messages[0].content"


@pytest.mark.parametrize(
    "part, param",
    [
        ({"type": "image_url", "image_url": {"url": "http://x"}}, "messages[0].content[1]"),
        ("text", "messages[0].content[1]"),
        ({"type": "text"}, "messages[0].content[1].text"),
        ({"type": "text", "text": 5}, "messages[0].content[1].text"),
    ],
)
def test_it_rejects_a_bad_content_part(part, param):
    content = [{"type": "text", "text": "fine"}, part]

    assert rejection(body(messages=[{"role": "user", "content": content}])).param == param


@pytest.mark.parametrize("temperature", [-0.1, 2.01, 100, "1", True])
def test_it_rejects_temperature_out_of_range(temperature):
    assert rejection(body(temperature=temperature)).param == "temperature"


@pytest.mark.parametrize("temperature", [0, 2, 1.5])
def test_it_accepts_temperature_in_range(temperature):
    assert parse_chat_request(body(temperature=temperature)).temperature == temperature


@pytest.mark.parametrize("top_p", [-0.01, 1.01, 2, "0.5"])
def test_it_rejects_top_p_out_of_range(top_p):
    assert rejection(body(top_p=top_p)).param == "top_p"


@pytest.mark.parametrize("top_p", [0, 1, 0.3])
def test_it_accepts_top_p_in_range(top_p):
    assert parse_chat_request(body(top_p=top_p)).top_p == top_p


@pytest.mark.parametrize("n", [0, 9, -1, 1.5, "2", True])
def test_it_rejects_bad_n(n):
    assert rejection(body(n=n)).param == "n"


@pytest.mark.parametrize("max_tokens", [0, -5, "5", True, 5.0])
def test_it_rejects_bad_max_tokens(max_tokens):
    assert rejection(body(max_tokens=max_tokens)).param == "max_tokens"


def test_it_rejects_conflicting_max_tokens():
    assert rejection(body(max_tokens=5, max_completion_tokens=6)).param == "max_completion_tokens"


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], ["a", 1], [None], 7, {"a": 1}, [""], ""])
def test_it_rejects_bad_stop(stop):
    assert rejection(body(stop=stop)).param == "stop"


def test_it_rejects_stream_options_without_stream():
    assert rejection(body(stream_options={"include_usage": True})).param == "stream_options"
    assert rejection(body(stream=False, stream_options={"include_usage": True})).param == "stream_options"


def test_it_rejects_bad_stream_options():
    assert rejection(body(stream=True, stream_options={"other": 1})).param == "stream_options.other"
    error = rejection(body(stream=True, stream_options={"include_usage": "yes"}))
    assert error.param == "stream_options.include_usage"


def test_it_rejects_a_non_boolean_stream():
    assert rejection(body(stream="true")).param == "stream"


@pytest.mark.parametrize("name", ["functions", "tools_choice", "temprature", "response_formats"])
def test_it_rejects_an_unknown_parameter(name):
    error = rejection(body(**{name: 1}))

    assert error.param == name
    assert name in error.message


@pytest.mark.parametrize("seed", [1.5, "42", True, [1]])
def test_it_rejects_a_seed_that_is_not_an_integer(seed):
    assert rejection(body(seed=seed)).param == "seed"


@pytest.mark.parametrize("top_logprobs", [-1, 21, 2.0])
def test_it_rejects_top_logprobs_out_of_range(top_logprobs):
    assert rejection(body(logprobs=True, top_logprobs=top_logprobs)).param == "top_logprobs"


def test_it_rejects_top_logprobs_without_logprobs():
    assert rejection(body(top_logprobs=2)).param == "top_logprobs"


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1])
def test_it_rejects_a_seed_outside_64_bits(seed):
    assert rejection(body(seed=seed)).param == "seed"


def test_it_accepts_a_seed_at_the_64_bit_bounds():
    assert parse_chat_request(body(seed=2**63 - 1)).seed == 2**63 - 1
    assert parse_chat_request(body(seed=-(2**63))).seed == -(2**63)


def test_it_rejects_a_non_string_user():
    assert rejection(body(user=5)).param == "user"


@pytest.mark.parametrize("penalty", ["frequency_penalty", "presence_penalty"])
def test_it_rejects_a_penalty_out_of_range(penalty):
    assert rejection(body(**{penalty: 2.5})).param == penalty


# --- Hostile bodies: bounded by gpucloud.jsonbody, always a 400 naming what it can -----------------


@pytest.mark.parametrize("role", [["user"], {"a": 1}, 1, None])
def test_it_rejects_a_role_of_the_wrong_type(role):
    error = rejection(body(messages=[{"role": role, "content": "Hi"}]))

    assert error.param == "messages[0].role"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (rb'{"model": "\ud800", "messages": [{"role": "user", "content": "Hi"}]}', "model"),
        (rb'{"model": "m", "messages": [{"role": "user", "content": "\ud800"}]}', "messages[0].content"),
        (rb'{"model": "m", "messages": [{"role": "user", "content": "a\u0000"}]}', "messages[0].content"),
    ],
)
def test_it_rejects_strings_that_would_break_encoding(raw, param):
    assert rejection(raw).param == param


def test_it_rejects_deep_nesting():
    raw = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    assert "nested" in rejection(raw).message


def test_it_rejects_huge_integers():
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "Hi"}], "seed": ' + b"7" * 4400 + b"}"

    assert "digits" in rejection(raw).message


def test_it_keeps_error_messages_short():
    error = rejection(body(n=list(range(10_000))))

    assert len(error.message) < 200

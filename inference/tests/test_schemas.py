"""inference.schemas through inference.validation: tools, structured outputs, logprobs, penalties."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucloud.openai_errors import ApiError
from inference.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inference.validation import check_engine_support, parse_chat_request

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
USER = {"role": "user", "content": "Weather in Oslo?"}


def body(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": [USER], **fields}).encode()


def rejection(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(raw)
    assert caught.value.status == 400
    return caught.value


def test_it_accepts_tools_and_a_tool_round_trip():
    messages = [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12 C"}]  # fmt: skip

    chat = parse_chat_request(body(messages=messages, tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False))

    assert chat.tools == [WEATHER]
    assert chat.tool_choice == "auto"
    assert chat.parallel_tool_calls is False
    assert chat.messages[1] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert chat.messages[2] == {"role": "tool", "content": "12 C", "tool_call_id": "call_1"}


def test_an_assistant_message_with_tool_calls_may_leave_out_content():
    messages = [
        USER,
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"},
    ]

    assert parse_chat_request(body(messages=messages, tools=[WEATHER])).messages[1]["content"] is None


def test_it_takes_a_named_tool_choice():
    choice = {"type": "function", "function": {"name": "get_weather"}}

    assert parse_chat_request(body(tools=[WEATHER], tool_choice=choice)).tool_choice == choice


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
         "tools[0].function.parameters"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        ({"messages": [USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages[1].tool_call_id"),
        ({"messages": [USER, {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]}, "messages[0].tool_calls"),
        ({"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]},
         "messages[1].tool_calls[0].function"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
         "response_format.json_schema.schema"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"presence_penalty": -2.5}, "presence_penalty"),
        ({"frequency_penalty": "1"}, "frequency_penalty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"17": 101}}, "logit_bias.17"),
        ({"seed": 2**63}, "seed"),
    ],
)  # fmt: skip
def test_it_rejects_naming_the_param(fields, param):
    error = rejection(body(**fields))

    assert error.param == param
    assert len(error.message) < 300


def test_an_unknown_tool_choice_says_which_function():
    error = rejection(body(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}))

    assert '"nope"' in error.message


def test_the_engine_must_honour_what_is_asked():
    chat = parse_chat_request(body(tools=[WEATHER], logprobs=True, top_logprobs=3, presence_penalty=1))
    check_engine_support(chat, "simulated")
    check_engine_support(chat, "openai")

    with pytest.raises(ApiError) as caught:
        check_engine_support(chat, "hf")
    assert caught.value.param == "presence_penalty"


def test_a_schema_the_simulated_engine_cannot_enforce_is_a_400_naming_the_keyword():
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}}
    chat = parse_chat_request(
        body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}})
    )

    with pytest.raises(ApiError) as caught:
        check_engine_support(chat, "simulated")
    assert caught.value.param == "response_format.json_schema.schema"
    assert "pattern" in caught.value.message
    check_engine_support(chat, "openai")  # the upstream decides


def test_the_models_describe_the_api_as_json_schema():
    for model in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest):
        schema = model.model_json_schema()
        assert schema["type"] == "object"
        assert "model" in schema["required"]
    chat = ChatCompletionRequest.model_json_schema()
    assert {"tools", "tool_choice", "response_format", "logprobs", "top_logprobs"} <= set(chat["properties"])


# --- Any JSON in the new fields: a 400 or a request, never another exception ----------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["function", "auto", "none", "required", "json_schema", "object"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "function", "name", "parameters", "schema", "json_schema", "properties", "id",
                         "tool_calls", "arguments", "role", "content", "tool_call_id", "items", "$ref", "anyOf"]),
        inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
FIELDS = ["tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs",
          "logit_bias", "presence_penalty", "frequency_penalty", "seed", "messages"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=JSON, tools=st.booleans())
def test_any_value_is_a_400_or_a_request(field, value, tools):
    fields = {field: value}
    if tools and field != "tools":
        fields["tools"] = [WEATHER]
    try:
        chat = parse_chat_request(body(**fields))
    except ApiError as error:
        assert error.status == 400 and error.message
        return
    for engine in ("simulated", "openai", "hf"):
        try:
            check_engine_support(chat, engine)
        except ApiError as error:
            assert error.status == 400 and error.param

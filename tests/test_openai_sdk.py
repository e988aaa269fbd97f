"""The official `openai` SDK against the stand-in server: what a peer's client expects of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from moa_graph.testing import StubServer

QUESTION = "What is 17 * 23?"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit"],
        },
    },
}
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with StubServer() as base_url:
        yield base_url


@pytest.fixture
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url, api_key="test", max_retries=0) as sdk:
        yield sdk


def _user(text: str = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- chat completions ----------------------------------------------------------------------


def test_sync_create_answers_naming_the_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="ref-a", messages=_user("Hi"))
    assert completion.choices[0].message.content.startswith("[ref-a]")  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_async_create_answers_too(url: str) -> None:
    async with openai.AsyncOpenAI(base_url=url, api_key="test", max_retries=0) as sdk:
        completion = await sdk.chat.completions.create(model="ref-b", messages=_user("Hi"))
    assert str(completion.choices[0].message.content).startswith("[ref-b]")


def test_stream_with_include_usage_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=_user("Hi"), stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[m]")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=_user("Hi"), stream=True))
    assert all(c.usage is None and c.choices for c in chunks)


def test_tool_choice_auto_calls_the_calculator_for_arithmetic(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m", messages=_user(), tools=[CALCULATOR, WEATHER], tool_choice="auto"
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "calculator"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"expression": "17 * 23"}  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_tool_choice_auto_calls_a_tool_the_user_names(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m", messages=_user("Use get_weather for Paris"), tools=[CALCULATOR, WEATHER]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])  # type: ignore[union-attr,index]


def test_tool_choice_none_never_calls_a_tool(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m", messages=_user(), tools=[CALCULATOR], tool_choice="none"
    )
    assert not completion.choices[0].message.tool_calls
    assert "391" in str(completion.choices[0].message.content)


def test_tool_choice_required_always_calls_a_tool(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m", messages=_user("Hello there"), tools=[WEATHER], tool_choice="required"
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    assert arguments["unit"] in {"celsius", "fahrenheit"}


def test_tool_choice_naming_a_function_calls_that_one(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        messages=_user(),
        tools=[CALCULATOR, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]


def test_tool_choice_naming_an_absent_tool_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(
            model="m",
            messages=_user(),
            tools=[CALCULATOR],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )


def test_parallel_tool_calls_false_makes_at_most_one_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        messages=_user("Call calculator and get_weather"),
        tools=[CALCULATOR, WEATHER],
        parallel_tool_calls=False,
    )
    assert len(completion.choices[0].message.tool_calls or []) == 1


def test_a_tool_result_is_answered_with_text(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="m", messages=_user(), tools=[CALCULATOR])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    history = [
        *_user(),
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "391"},
    ]
    second = client.chat.completions.create(model="m", messages=history, tools=[CALCULATOR])
    assert second.choices[0].message.content == "The result is 391."


def test_a_tool_message_without_its_call_is_a_400(client: openai.OpenAI) -> None:
    messages = [*_user(), {"role": "tool", "tool_call_id": "call_x", "content": "391"}]
    with pytest.raises(openai.BadRequestError, match="tool"):
        client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]


def test_json_object_mode_answers_a_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        messages=_user("Describe a cat in JSON"),
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(str(completion.choices[0].message.content)), dict)


def test_json_schema_mode_answers_json_valid_against_the_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        messages=_user("Make up a person"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    jsonschema.validate(json.loads(str(completion.choices[0].message.content)), PERSON_SCHEMA)


def test_a_strict_schema_that_is_not_closed_is_a_400(client: openai.OpenAI) -> None:
    loose = {"type": "object", "properties": {"name": {"type": "string"}}}
    with pytest.raises(openai.BadRequestError, match="additionalProperties"):
        client.chat.completions.create(
            model="m",
            messages=_user(),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "loose", "schema": loose, "strict": True},
            },
        )


def test_parse_returns_the_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="m", messages=_user("Make up a person"), response_format=Person
    )
    assert isinstance(completion.choices[0].message.parsed, Person)


def test_n_returns_that_many_choices(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="m", messages=_user("Hi"), n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]


def test_stop_cuts_the_text_before_the_stop_sequence(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="ref-a", messages=_user("Hi"), stop=["]"])
    assert completion.choices[0].message.content == "[ref-a"
    assert completion.choices[0].finish_reason == "stop"


def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m", messages=_user("Tell me about rivers"), max_tokens=2
    )
    assert len(str(completion.choices[0].message.content).split()) == 2
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


def test_max_completion_tokens_truncates_a_stream_too(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=_user("Tell me about rivers"), max_completion_tokens=3, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 3
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_seeded_request_is_answered_the_same_every_time(client: openai.OpenAI) -> None:
    def ask() -> str:
        completion = client.chat.completions.create(
            model="m",
            messages=_user("Make up a person, as JSON"),
            seed=7,
            n=2,
            response_format={"type": "json_object"},
        )
        return completion.model_dump_json(include={"choices"})

    assert ask() == ask()


def test_a_missing_model_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="model"):
        client.chat.completions.create(model="", messages=_user())


# --- models --------------------------------------------------------------------------------


def test_models_list_and_retrieve() -> None:
    with StubServer(models={"alpha": {}}) as base_url:
        sdk = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)
        assert [m.id for m in sdk.models.list()] == ["alpha"]
        assert sdk.models.retrieve("alpha").id == "alpha"


# --- responses -----------------------------------------------------------------------------


def test_responses_create_answers_with_output_text(client: openai.OpenAI) -> None:
    response = client.responses.create(model="ref-a", input="Hi")
    assert response.output_text.startswith("[ref-a]")
    assert response.usage is not None and response.usage.total_tokens > 0


def test_responses_stream_ends_with_the_completed_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="ref-a", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text
    assert final.output_text.startswith("[ref-a]")


def test_responses_tool_round_trip(client: openai.OpenAI) -> None:
    tool = {"type": "function", **CALCULATOR["function"]}
    first = client.responses.create(model="m", input=QUESTION, tools=[tool])  # type: ignore[list-item]
    call = next(item for item in first.output if item.type == "function_call")
    assert json.loads(call.arguments) == {"expression": "17 * 23"}  # type: ignore[union-attr]
    second = client.responses.create(
        model="m",
        input=[
            {"role": "user", "content": QUESTION},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "391"},  # type: ignore[union-attr]
        ],
        tools=[tool],  # type: ignore[list-item]
    )
    assert second.output_text == "The result is 391."

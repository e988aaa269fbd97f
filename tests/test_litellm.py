"""litellm's OpenAI route against the stand-in server: sync, async, streaming and tools."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

# litellm fetches its model price map over the network on import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm

from moa_graph.testing import StubServer

QUESTION = "What is 17 * 23?"
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


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    litellm.telemetry = False
    with StubServer() as base_url:
        yield base_url


def _call(url: str, model: str = "ref-a", **options: Any) -> dict[str, Any]:
    return {
        "model": f"openai/{model}",
        "api_base": url,
        "api_key": "test",
        "messages": [{"role": "user", "content": options.pop("text", "Hi")}],
        **options,
    }


def test_completion_answers_naming_the_model(url: str) -> None:
    response = litellm.completion(**_call(url))
    assert str(response.choices[0].message.content).startswith("[ref-a]")
    assert response.usage.total_tokens > 0


async def test_acompletion_answers_too(url: str) -> None:
    response = await litellm.acompletion(**_call(url, "ref-b"))
    assert str(response.choices[0].message.content).startswith("[ref-b]")


def test_stream_joins_to_the_answer_and_reports_usage(url: str) -> None:
    chunks = list(
        litellm.completion(**_call(url), stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[ref-a]")
    assert any(getattr(c, "usage", None) and c.usage.total_tokens > 0 for c in chunks)


def test_tools_round_trip(url: str) -> None:
    first = litellm.completion(**_call(url, text=QUESTION), tools=[CALCULATOR])
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "17 * 23"}
    messages = [
        {"role": "user", "content": QUESTION},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "391"},
    ]
    second = litellm.completion(
        model="openai/ref-a", api_base=url, api_key="test", messages=messages, tools=[CALCULATOR]
    )
    assert second.choices[0].message.content == "The result is 391."


def test_tool_choice_none_is_honoured(url: str) -> None:
    response = litellm.completion(
        **_call(url, text=QUESTION), tools=[CALCULATOR], tool_choice="none"
    )
    assert not response.choices[0].message.tool_calls

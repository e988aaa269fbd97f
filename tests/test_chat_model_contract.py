"""`MoAChatModel`'s contract with LangChain: model name, runs, usage, tools and structured output.

What LangChain's standard integration suite, `get_usage_metadata_callback` and
`create_agent` expect of a chat model, checked against the faithful stand-in over HTTP:
both what the aggregator was sent and what the caller got back.
"""

from typing import Any

from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.messages import AIMessage
from langchain_core.tracers.context import collect_runs
from langchain_core.tracers.schemas import Run
from pydantic import BaseModel

from moa_graph import MoAChatModel
from moa_graph.tools import calculator
from tests.test_chat_model import _stub_config


class Verdict(BaseModel):
    """A verdict on a claim."""

    claim: str
    holds: bool


class _Starts(BaseCallbackHandler):
    """Records each `on_chat_model_start` with its options."""

    def __init__(self) -> None:
        self.options: list[dict[str, Any] | None] = []

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, options: dict[str, Any] | None = None, **_: Any
    ) -> None:
        self.options.append(options)


def _moa(stub: Any, **kwargs: Any) -> MoAChatModel:
    return MoAChatModel(preset="demo", config=_stub_config(stub.url), **kwargs)


def _only_root(runs: list[Run]) -> Run:
    (root,) = runs
    return root


def _named(run: Run, prefix: str) -> list[Run]:
    """The runs under `run` (itself included) whose name starts with `prefix`."""
    found = [run] if run.name.startswith(prefix) else []
    return found + [hit for child in run.child_runs for hit in _named(child, prefix)]


def _usage_of(run: Run) -> Any:
    return run.outputs["generations"][0][0]["message"]["kwargs"]["usage_metadata"]  # type: ignore[index]


def _tokens(usage: Any) -> tuple[int, int, int]:
    return usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]


# -- model_name -----------------------------------------------------------------------------


def test_model_name_is_the_preset_that_ran(stub):
    moa = _moa(stub)
    reply = moa.invoke("hello")
    other = moa.invoke("hello", model="solo")

    assert reply.response_metadata["model_name"] == "demo"
    assert other.response_metadata["model_name"] == "solo"
    assert other.response_metadata["moa_preset"] == "solo"
    assert other.response_metadata["moa_aggregator_model"] == "boss"


async def test_a_streamed_reply_names_the_preset_once(stub):
    chunks = [chunk async for chunk in _moa(stub).astream("hello", model="solo")]
    whole = sum(chunks[1:], chunks[0])
    # One chunk carries the name: chunks' strings concatenate when added.
    assert whole.response_metadata["model_name"] == "solo"
    assert whole.response_metadata["moa_aggregator_model"] == "boss"


# -- runs and callbacks ---------------------------------------------------------------------


def test_a_callback_handler_sees_one_chat_model_run(stub):
    starts = _Starts()
    _moa(stub).invoke("hello", config={"callbacks": [starts]})
    assert len(starts.options) == 1


async def test_a_callback_handler_sees_one_chat_model_run_when_streaming(stub):
    starts = _Starts()
    async for _ in _moa(stub).astream("hello", config={"callbacks": [starts]}):
        pass
    assert len(starts.options) == 1


def test_a_callback_handler_on_a_chain_sees_one_chat_model_run_with_its_format(stub):
    # What the standard suite's test_structured_output asks: the aggregator, bound to the
    # schema's tool, must not pick up the chain's handlers from the run context.
    starts = _Starts()
    structured = _moa(stub).with_structured_output(Verdict, include_raw=True)
    structured.invoke("hello", config={"callbacks": [starts]})
    (options,) = starts.options
    assert options is not None
    assert options["ls_structured_output_format"]["schema"]["title"] == "Verdict"


def test_tracers_see_the_references_and_the_aggregator_as_child_runs(stub):
    with collect_runs() as runs:
        _moa(stub).invoke("hello")
    root = _only_root(runs.traced_runs)
    assert root.name == "MoAChatModel"
    assert sorted(child.name for child in root.child_runs) == [
        "moa_aggregator:stub:boss",
        "moa_reference:stub:alpha",
        "moa_reference:stub:beta",
    ]


def test_the_inner_aggregator_run_has_the_structured_output_format(stub):
    with collect_runs() as runs:
        _moa(stub).with_structured_output(Verdict, include_raw=True).invoke("hello")
    (moa_run,) = _named(_only_root(runs.traced_runs), "MoAChatModel")
    (aggregator,) = _named(moa_run, "moa_aggregator")
    outer = moa_run.extra["options"]["ls_structured_output_format"]
    inner = aggregator.extra["options"]["ls_structured_output_format"]
    assert inner == outer
    assert inner["schema"]["title"] == "Verdict"


# -- usage ----------------------------------------------------------------------------------


def test_usage_metadata_is_the_calls_total_and_counted_once_by_the_usage_callback(stub):
    with collect_runs() as runs, get_usage_metadata_callback() as counted:
        reply = _moa(stub).invoke("hello")
    children = _only_root(runs.traced_runs).child_runs
    inner = [_usage_of(child) for child in children]
    expected = tuple(sum(column) for column in zip(*map(_tokens, inner), strict=True))

    assert len(inner) == 3  # two references and the aggregator, each with its usage
    assert _tokens(reply.usage_metadata) == expected
    assert list(counted.usage_metadata) == ["demo"]
    assert _tokens(counted.usage_metadata["demo"]) == expected


def test_a_cached_step_counts_the_aggregator_only(stub):
    moa = _moa(stub)
    first = moa.invoke("hello")
    again = moa.invoke("hello")  # the same turn: its references come from the cache
    references = first.response_metadata["moa_reference_usage"]["total"]["input_tokens"]

    assert again.response_metadata["moa_references_cached"] is True
    assert again.usage_metadata["input_tokens"] == _aggregator_input(again)
    assert first.usage_metadata["input_tokens"] == _aggregator_input(first) + references


def _aggregator_input(reply: AIMessage) -> int:
    return reply.response_metadata["token_usage"]["prompt_tokens"]


async def test_streamed_usage_is_the_calls_total_on_one_chunk(stub):
    moa = _moa(stub)
    expected = (await moa.ainvoke("hello")).usage_metadata
    moa = _moa(stub)  # a fresh reference cache: the references run again
    with get_usage_metadata_callback() as counted:
        chunks = [chunk async for chunk in moa.astream("hello")]
    with_input = [chunk for chunk in chunks if (chunk.usage_metadata or {}).get("input_tokens")]
    whole = sum(chunks[1:], chunks[0])

    assert len(with_input) == 1
    assert _tokens(whole.usage_metadata) == _tokens(expected)
    assert _tokens(counted.usage_metadata["demo"]) == _tokens(expected)


# -- tools and structured output ------------------------------------------------------------


def test_bind_tools_options_reach_the_aggregator(stub):
    bound = _moa(stub).bind_tools([calculator], strict=True, parallel_tool_calls=False)
    bound.invoke("What is 17 * 23?")
    (boss,) = stub.requests("boss")
    (tool,) = boss["tools"]
    assert tool["function"]["strict"] is True
    assert tool["function"]["parameters"]["additionalProperties"] is False
    assert boss["parallel_tool_calls"] is False


def test_json_schema_structured_output_sends_a_response_format(stub):
    structured = _moa(stub).with_structured_output(
        Verdict, method="json_schema", strict=True, include_raw=True
    )
    result = structured.invoke("Does 2 + 2 make 4?")
    (boss,) = stub.requests("boss")
    response_format = boss["response_format"]

    assert isinstance(result["raw"], AIMessage)
    assert isinstance(result["parsed"], Verdict) and result["parsing_error"] is None
    assert "tools" not in boss
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Verdict"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"]["additionalProperties"] is False


def test_json_mode_structured_output_sends_a_json_object_format(stub):
    structured = _moa(stub).with_structured_output(Verdict, method="json_mode", include_raw=True)
    structured.invoke("Answer in JSON: does 2 + 2 make 4?")
    (boss,) = stub.requests("boss")
    assert boss["response_format"] == {"type": "json_object"}


def test_function_calling_structured_output_forces_a_strict_tool(stub):
    structured = _moa(stub).with_structured_output(Verdict, strict=True, include_raw=True)
    structured.invoke("Does 2 + 2 make 4?")
    (boss,) = stub.requests("boss")
    (tool,) = boss["tools"]
    assert tool["function"]["name"] == "Verdict"
    assert tool["function"]["strict"] is True
    assert boss["tool_choice"] == {"type": "function", "function": {"name": "Verdict"}}


def test_create_agent_with_a_provider_strategy_sends_strict_tools_and_a_schema(stub):
    agent = create_agent(_moa(stub), tools=[calculator], response_format=ProviderStrategy(Verdict))
    result = agent.invoke({"messages": [("user", "Is 17 * 23 = 391?")]})

    assert isinstance(result["structured_response"], Verdict)
    assert [m.type for m in result["messages"]][:3] == ["human", "ai", "tool"]
    first = stub.requests("boss")[0]
    (tool,) = first["tools"]
    assert tool["function"]["name"] == "calculator"
    assert tool["function"]["strict"] is True
    assert first["response_format"]["type"] == "json_schema"
    assert first["response_format"]["json_schema"]["name"] == "Verdict"

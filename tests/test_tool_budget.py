"""The tool loop is bounded: `max_tool_rounds` rounds, then one call that must answer."""

from __future__ import annotations

import itertools

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import MoAChatModel, MoAToolLoopError, ModelSpec, Preset, build_moa_graph
from moa_graph.prompts import TOOL_ROUNDS_SPENT
from moa_graph.tools import calculator
from tests.fakes import FakeChatModel, FakeModels, tool_call

_NOTE = TOOL_ROUNDS_SPENT.split("{", 1)[0]


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"nothing new about {query}"


def _preset(rounds: int) -> Preset:
    return Preset(
        name="loopy",
        reference_models=[ModelSpec(provider="fake", model="ref")],
        aggregator=ModelSpec(provider="fake", model="agg"),
        max_tool_rounds=rounds,
    )


def _looping(*, obeys_the_note: bool) -> FakeChatModel:
    """An aggregator that always wants one more lookup (unless told its rounds are spent)."""
    ids = itertools.count(1)

    def respond(messages: list[BaseMessage]) -> AIMessage:
        if obeys_the_note and str(messages[-1].content).startswith(_NOTE):
            return AIMessage(content="Here is what I found so far.")
        return tool_call("lookup", {"query": "more"}, call_id=f"call_{next(ids)}")

    return FakeChatModel(label="agg", respond=respond)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_the_graph_answers_without_tools_once_its_rounds_are_spent(mode):
    models = FakeModels(agg=_looping(obeys_the_note=True))
    graph = build_moa_graph(_preset(3), tools=[lookup], model_factory=models).compile()
    request = {"messages": [HumanMessage("dig")]}
    out = graph.invoke(request) if mode == "invoke" else await graph.ainvoke(request)

    calls = models["agg"].calls
    assert len(calls) == 4, "three tool rounds, then one last step"
    assert [m.type for m in out["messages"]].count("tool") == 3
    assert out["messages"][-1].content == "Here is what I found so far."
    # Every step but the last may call tools; the last keeps them described but says none.
    assert [c.tool_choice for c in calls] == [None, None, None, "none"]
    assert all(c.tools and c.tools[0]["function"]["name"] == "lookup" for c in calls)
    assert str(calls[-1].messages[-1].content) == TOOL_ROUNDS_SPENT.format(rounds=3)
    assert not any(_NOTE in str(m.content) for m in out["messages"]), "the note is ephemeral"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_an_aggregator_that_calls_tools_anyway_stops_the_turn_resumably(mode):
    models = FakeModels(agg=_looping(obeys_the_note=False))
    saver = InMemorySaver()
    graph = build_moa_graph(_preset(2), tools=[lookup], model_factory=models).compile(
        checkpointer=saver
    )
    thread = {"configurable": {"thread_id": "loop"}}
    request = {"messages": [HumanMessage("dig")]}
    with pytest.raises(MoAToolLoopError, match=r"'loopy' stopped after 2 tool rounds") as info:
        if mode == "invoke":
            graph.invoke(request, thread)
        else:
            await graph.ainvoke(request, thread)
    assert (info.value.preset, info.value.rounds) == ("loopy", 2)
    assert len(models["agg"].calls) == 3
    state = graph.get_state(thread)
    assert state.next == ("aggregator",), "the turn stops before the refused step"
    assert [m.type for m in state.values["messages"]].count("tool") == 2

    # Resumable: the same thread with a larger budget goes on from where it stopped.
    models["agg"].respond = lambda messages: AIMessage(content="done")
    wider = build_moa_graph(_preset(5), tools=[lookup], model_factory=models).compile(
        checkpointer=saver
    )
    out = wider.invoke(None, thread) if mode == "invoke" else await wider.ainvoke(None, thread)
    assert out["messages"][-1].content == "done"
    assert models["agg"].calls[-1].tool_choice is None


def test_zero_rounds_means_the_aggregator_never_gets_to_call_a_tool():
    models = FakeModels(agg=_looping(obeys_the_note=True))
    graph = build_moa_graph(_preset(0), tools=[lookup], model_factory=models).compile()
    out = graph.invoke({"messages": [HumanMessage("dig")]})
    assert [m.type for m in out["messages"]] == ["human", "ai"]
    assert models["agg"].calls[0].tool_choice == "none"


def test_the_chat_model_in_create_agent_ends_after_its_rounds():
    models = FakeModels(agg=_looping(obeys_the_note=True))
    moa = MoAChatModel(preset=_preset(2), model_factory=models)
    agent = create_agent(moa, tools=[lookup])
    out = agent.invoke({"messages": [("user", "dig")]})

    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai", "tool", "ai"]
    assert out["messages"][-1].content == "Here is what I found so far."
    assert [c.tool_choice for c in models["agg"].calls] == [None, None, "none"]


async def test_the_chat_model_refuses_tool_calls_on_its_last_step():
    models = FakeModels(agg=_looping(obeys_the_note=False))
    moa = MoAChatModel(preset=_preset(1), model_factory=models).bind_tools([lookup])
    first = await moa.ainvoke([HumanMessage("dig")])
    assert first.tool_calls
    history = [HumanMessage("dig"), first, ToolMessage("nothing", tool_call_id="call_1")]
    with pytest.raises(MoAToolLoopError):
        await moa.ainvoke(history)
    with pytest.raises(MoAToolLoopError):
        list(moa.stream(history))


def test_the_last_request_over_http_says_tool_choice_none(stub):
    config = {
        "moa": {
            "providers": {"stub": {"base_url": stub.url}},
            "presets": {
                "calc": {
                    "max_tool_rounds": 1,
                    "reference_models": [{"provider": "stub", "model": "alpha"}],
                    "aggregator": {"provider": "stub", "model": "boss"},
                }
            },
        }
    }
    graph = build_moa_graph("calc", tools=[calculator], config=config).compile()
    out = graph.invoke({"messages": [("user", "What is 17 * 23?")]})

    first, last = stub.requests("boss")
    assert "tool_choice" not in first and first["tools"]
    assert last["tool_choice"] == "none" and last["tools"][0]["function"]["name"] == "calculator"
    assert last["messages"][-1] == {"role": "user", "content": TOOL_ROUNDS_SPENT.format(rounds=1)}
    assert out["messages"][-1].type == "ai" and not out["messages"][-1].tool_calls


def test_only_assistant_messages_that_call_tools_spend_the_budget():
    # A shared transcript: other agents' plain replies after the human message.
    models = FakeModels(agg=FakeChatModel(label="agg"))
    moa = MoAChatModel(preset=_preset(1), model_factory=models).bind_tools([lookup])
    history = [HumanMessage("dig"), AIMessage("planner: on it"), AIMessage("critic: go on")]
    moa.invoke(history)
    assert models["agg"].calls[-1].tool_choice is None
    assert not any(_NOTE in str(m.content) for m in models["agg"].calls[-1].messages)


def test_without_tools_no_note_is_sent_but_a_hallucinated_call_still_ends_the_loop():
    models = FakeModels(agg=_looping(obeys_the_note=False))
    graph = build_moa_graph(_preset(0), tools=(), model_factory=models).compile()
    with pytest.raises(MoAToolLoopError):
        graph.invoke({"messages": [HumanMessage("dig")]})
    (call,) = models["agg"].calls
    assert not any(_NOTE in str(m.content) for m in call.messages)


def test_structured_output_keeps_its_own_tool_choice_when_the_budget_is_spent():
    from pydantic import BaseModel

    class Verdict(BaseModel):
        ok: bool

    models = FakeModels(agg=FakeChatModel(label="agg", script=[tool_call("Verdict", {"ok": True})]))
    moa = MoAChatModel(preset=_preset(0), model_factory=models)
    assert moa.with_structured_output(Verdict).invoke("judge it") == Verdict(ok=True)
    assert models["agg"].calls[-1].tool_choice not in (None, "none")

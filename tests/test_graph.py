"""Behaviour of the MoA graph, driven by small fake chat models."""

import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import MoAAggregatorError, ModelSpec, Preset, build_moa_graph
from moa_graph.prompts import GUIDANCE_NONE_AVAILABLE, REFERENCE_SYSTEM_PROMPT
from moa_graph.tools import calculator
from tests.fakes import FakeChatModel, FakeModels, tool_call

GUIDANCE_MARK = "[MoA guidance"


def _preset(*models: str, enabled: bool = True, aggregator: str = "agg") -> Preset:
    refs = [
        ModelSpec(provider=m.split(":")[0], model=m.split(":")[1])
        if ":" in m
        else ModelSpec(provider="fake", model=m)
        for m in models
    ]
    return Preset(
        name="test",
        enabled=enabled,
        reference_models=refs,
        aggregator=ModelSpec(provider="fake", model=aggregator),
    )


def _ask(text: str) -> dict:
    return {"messages": [HumanMessage(text)]}


def _thread(thread_id: str = "t1") -> dict:
    return {"configurable": {"thread_id": thread_id}}


def _guidance(call) -> str:
    found = [m.content for m in call.messages if str(m.content).startswith(GUIDANCE_MARK)]
    assert len(found) == 1, "the aggregator should see exactly one guidance message"
    return found[0]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_references_run_in_parallel(mode):
    models = FakeModels(
        a=FakeChatModel(label="a", delay=0.5), b=FakeChatModel(label="b", delay=0.5)
    )
    graph = build_moa_graph(_preset("a", "b"), model_factory=models).compile()
    started = time.monotonic()
    if mode == "invoke":
        out = graph.invoke(_ask("hi"))
    else:
        out = await graph.ainvoke(_ask("hi"))
    elapsed = time.monotonic() - started
    assert elapsed < 0.9, f"references did not run in parallel ({elapsed:.2f}s)"
    assert [r["status"] for r in out["references"]] == ["ok", "ok"]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_labels_follow_preset_order_not_completion_order(mode):
    models = FakeModels(
        slow=FakeChatModel(label="slow", delay=0.3),
        mid=FakeChatModel(label="mid", delay=0.15),
        fast=FakeChatModel(label="fast", delay=0.0),
    )
    graph = build_moa_graph(_preset("slow", "mid", "fast"), model_factory=models).compile()
    out = graph.invoke(_ask("q")) if mode == "invoke" else await graph.ainvoke(_ask("q"))

    assert [(r["index"], r["label"], r["text"]) for r in out["references"]] == [
        (0, "fake:slow", "slow answers"),
        (1, "fake:mid", "mid answers"),
        (2, "fake:fast", "fast answers"),
    ]
    guidance = _guidance(models["agg"].calls[0])
    order = [
        guidance.index(f"Reference {n} — fake:{m}:")
        for n, m in [(1, "slow"), (2, "mid"), (3, "fast")]
    ]
    assert order == sorted(order)
    assert "slow answers" in guidance.split("Reference 2")[0]


async def test_a_failing_reference_is_isolated():
    models = FakeModels(boom=FakeChatModel(script=[RuntimeError("kaboom")]))
    graph = build_moa_graph(_preset("ok", "boom", "ok2"), model_factory=models).compile()
    out = await graph.ainvoke(_ask("q"))

    refs = out["references"]
    assert [r["status"] for r in refs] == ["ok", "failed", "ok"]
    assert refs[1]["text"] == "[failed: RuntimeError: kaboom]"
    assert refs[1]["error_type"] == "RuntimeError"
    assert out["messages"][-1].content == "agg answers"
    guidance = _guidance(models["agg"].calls[0])
    assert "Reference 1 — fake:ok:" in guidance and "Reference 2 — fake:ok2:" in guidance
    assert "Unavailable references: fake:boom (failed)." in guidance


async def test_a_moa_reference_is_skipped_and_never_built():
    models = FakeModels()
    graph = build_moa_graph(_preset("ok", "moa:review"), model_factory=models).compile()
    out = await graph.ainvoke(_ask("q"))

    skipped = out["references"][1]
    assert skipped["status"] == "skipped"
    assert "cannot recursively reference MoA" in skipped["text"]
    assert "moa:review" not in models.built
    assert "Unavailable references: moa:review (skipped)." in _guidance(models["agg"].calls[0])


def test_disabled_preset_runs_no_references_and_passes_the_conversation_unmodified():
    models = FakeModels()
    graph = build_moa_graph(_preset("a", "b", enabled=False), model_factory=models).compile()
    conversation = [SystemMessage("be brief"), HumanMessage("question")]
    out = graph.invoke({"messages": conversation})

    assert models.built == ["fake:agg"]
    assert out["references"] == []
    sent = models["agg"].calls[0].messages
    assert [(m.type, m.content) for m in sent] == [("system", "be brief"), ("human", "question")]


def test_disabled_reference_models_are_not_dispatched():
    preset = _preset("a", "b").model_copy(
        update={
            "reference_models": [
                ModelSpec(provider="fake", model="a"),
                ModelSpec(provider="fake", model="b", enabled=False),
            ]
        }
    )
    models = FakeModels()
    out = build_moa_graph(preset, model_factory=models).compile().invoke(_ask("q"))
    assert [r["label"] for r in out["references"]] == ["fake:a"]
    assert "fake:b" not in models.built


def test_all_references_failing_still_lets_the_aggregator_act():
    models = FakeModels(
        a=FakeChatModel(script=[TimeoutError("took too long")]),
        b=FakeChatModel(script=[ValueError("bad")]),
    )
    out = build_moa_graph(_preset("a", "b"), model_factory=models).compile().invoke(_ask("q"))

    assert [r["status"] for r in out["references"]] == ["failed", "failed"]
    guidance = _guidance(models["agg"].calls[0])
    assert GUIDANCE_NONE_AVAILABLE in guidance
    assert "Reference 1" not in guidance
    assert out["messages"][-1].content == "agg answers"


def test_an_empty_reference_answer_is_marked():
    models = FakeModels(a=FakeChatModel(script=[""]))
    out = build_moa_graph(_preset("a"), model_factory=models).compile().invoke(_ask("q"))
    assert out["references"][0]["text"] == "(empty response)"


def test_references_get_the_trimmed_view_with_the_advisor_prompt_and_no_tools():
    models = FakeModels(
        agg=FakeChatModel(script=[tool_call("calculator", {"expression": "2+2"}), "4"])
    )
    graph = build_moa_graph(_preset("a"), tools=[calculator], model_factory=models).compile()
    graph.invoke(
        {"messages": [SystemMessage("caller's long system prompt"), HumanMessage("what is 2+2?")]}
    )

    (call,) = models["a"].calls
    assert [(m.type, m.content) for m in call.messages] == [
        ("system", REFERENCE_SYSTEM_PROMPT),
        ("human", "what is 2+2?"),
    ]
    assert call.tools == []
    assert [t["function"]["name"] for t in models["agg"].calls[0].tools] == ["calculator"]


def test_tool_loop_runs_the_real_tool_and_references_run_once_per_turn():
    models = FakeModels(
        agg=FakeChatModel(
            script=[
                tool_call("calculator", {"expression": "17 * 23"}, "c1"),
                tool_call("calculator", {"expression": "391 + 1"}, "c2"),
                "17 * 23 = 391, and one more is 392.",
            ]
        )
    )
    graph = build_moa_graph(_preset("a", "b"), tools=[calculator], model_factory=models).compile()
    out = graph.invoke(_ask("What is 17 * 23, plus one?"))

    tool_results = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert tool_results == ["391", "392"]
    assert out["messages"][-1].content == "17 * 23 = 391, and one more is 392."
    assert len(models["agg"].calls) == 3
    assert len(models["a"].calls) == 1 and len(models["b"].calls) == 1


def test_a_failing_tool_becomes_an_error_message_not_a_crash():
    @tool
    def flaky(x: str) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    models = FakeModels(agg=FakeChatModel(script=[tool_call("flaky", {"x": "1"}), "gave up"]))
    out = (
        build_moa_graph(_preset("a"), tools=[flaky], model_factory=models)
        .compile()
        .invoke(_ask("try it"))
    )
    error = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert error.status == "error" and "disk on fire" in error.content
    assert out["messages"][-1].content == "gave up"


def test_guidance_is_never_persisted_and_the_prompt_prefix_is_stable():
    models = FakeModels(
        agg=FakeChatModel(script=[tool_call("calculator", {"expression": "6*7"}), "42"])
    )
    graph = build_moa_graph(_preset("a"), tools=[calculator], model_factory=models).compile(
        checkpointer=InMemorySaver()
    )
    out = graph.invoke(_ask("6*7?"), _thread())

    assert not any(GUIDANCE_MARK in str(m.content) for m in out["messages"])
    for snapshot in graph.get_state_history(_thread()):
        assert not any(GUIDANCE_MARK in str(m.content) for m in snapshot.values["messages"])
    first, second = (c.messages for c in models["agg"].calls)
    # The guidance sits right after the human turn; step 2 extends step 1's input unchanged.
    assert [m.type for m in first] == ["human", "human"]
    assert first[1].content.startswith(GUIDANCE_MARK)
    assert [(m.type, m.content) for m in second[:2]] == [(m.type, m.content) for m in first]
    assert [m.type for m in second[2:]] == ["ai", "tool"]


def test_a_second_turn_on_the_same_thread_resets_references():
    models = FakeModels(
        a=FakeChatModel(respond=lambda msgs: f"a on {msgs[-1].content}"),
    )
    graph = build_moa_graph(_preset("a"), model_factory=models).compile(
        checkpointer=InMemorySaver()
    )
    first = graph.invoke(_ask("first question"), _thread())
    second = graph.invoke(_ask("second question"), _thread())

    assert [r["text"] for r in first["references"]] == ["a on first question"]
    assert [r["text"] for r in second["references"]] == ["a on second question"]
    assert len(models["a"].calls) == 2
    assert [m.type for m in second["messages"]] == ["human", "ai", "human", "ai"]
    # The second turn's references saw the whole conversation so far, trimmed.
    assert [m.content for m in models["a"].calls[1].messages[1:]] == [
        "first question",
        "agg answers",
        "second question",
    ]


def test_references_run_once_even_when_the_input_already_holds_tool_traffic():
    # A turn resumed mid-way: the human message is followed by tool traffic in the input.
    models = FakeModels()
    graph = build_moa_graph(_preset("a"), tools=[calculator], model_factory=models).compile()
    graph.invoke(
        {
            "messages": [
                HumanMessage("q"),
                tool_call("calculator", {"expression": "1+1"}),
                ToolMessage("2", tool_call_id="call_1"),
            ]
        }
    )
    assert len(models["a"].calls) == 1
    assert len(models["agg"].calls) == 1


def test_a_conversation_without_a_user_message_is_a_clear_error():
    graph = build_moa_graph(_preset("a"), model_factory=FakeModels()).compile()
    with pytest.raises(ValueError, match="no user message"):
        graph.invoke({"messages": [SystemMessage("sys")]})


def test_an_aggregator_failure_is_typed_and_names_the_model():
    models = FakeModels(agg=FakeChatModel(label="agg", script=[ConnectionError("upstream closed")]))
    graph = build_moa_graph(_preset("a"), model_factory=models).compile(
        checkpointer=InMemorySaver()
    )
    with pytest.raises(MoAAggregatorError, match=r"fake:agg.*ConnectionError: upstream closed"):
        graph.invoke(_ask("q"), _thread())
    # The references' work is checkpointed: a retry of the turn does not re-run them.
    state = graph.get_state(_thread())
    assert state.next == ("aggregator",)
    assert [r["status"] for r in state.values["references"]] == ["ok"]
    out = graph.invoke(None, _thread())
    assert out["messages"][-1].content == "agg answers"
    assert len(models["a"].calls) == 1


def test_aggregator_replies_carry_the_graph_name():
    out = (
        build_moa_graph(_preset("a"), model_factory=FakeModels(), name="panel")
        .compile()
        .invoke(_ask("q"))
    )
    assert isinstance(out["messages"][-1], AIMessage)
    assert out["messages"][-1].name == "panel"


def test_preset_names_resolve_through_the_config():
    config = {
        "moa": {
            "presets": {
                "review": {
                    "reference_models": [{"provider": "fake", "model": "a"}],
                    "aggregator": {"provider": "fake", "model": "agg"},
                }
            }
        }
    }
    models = FakeModels()
    graph = build_moa_graph("review", config=config, model_factory=models).compile()
    graph.invoke(_ask("q"))
    assert models.built == ["fake:a", "fake:agg"]


def test_an_empty_conversation_is_a_clear_error():
    graph = build_moa_graph(_preset("a"), model_factory=FakeModels()).compile()
    with pytest.raises(ValueError, match="no user message"):
        graph.invoke({"messages": []})


def test_a_message_with_an_unknown_role_is_a_clear_error_before_any_call():
    models = FakeModels()
    graph = build_moa_graph(_preset("a"), model_factory=models).compile()
    with pytest.raises(ValueError, match="Unexpected message type: 'wizard'"):
        graph.invoke({"messages": [{"role": "wizard", "content": "abracadabra"}]})
    assert models.built == []


def test_a_user_turn_of_images_only_reaches_references_whole():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    models = FakeModels()
    graph = build_moa_graph(_preset("a"), model_factory=models).compile()
    out = graph.invoke({"messages": [{"role": "user", "content": [image]}]})
    assert models["a"].calls[0].messages[1].content == [image]
    assert out["references"][0]["status"] == "ok"


async def test_a_runs_output_holds_only_the_public_keys():
    graph = build_moa_graph(_preset("a"), model_factory=FakeModels()).compile(
        checkpointer=InMemorySaver()
    )
    out = graph.invoke(_ask("hi"), _thread())
    again = await graph.ainvoke(_ask("again"), _thread())

    assert set(out) == set(again) == {"messages", "references", "judgement", "usage"}
    # The bookkeeping is still checkpointed (a resumed turn needs it), and `stream_mode=
    # "values"` shows the whole state, as LangGraph defines it.
    assert "reference_turn" in graph.get_state(_thread()).values
    public = ["messages", "references", "judgement", "usage"]
    assert list(graph.get_output_jsonschema()["properties"]) == public


def test_the_compiled_graph_is_named_after_its_agent():
    builder = build_moa_graph(_preset("a"), model_factory=FakeModels(), name="math_moa")
    assert builder.compile().name == "math_moa"
    assert builder.compile(name="other").name == "other"
    assert build_moa_graph(_preset("a"), model_factory=FakeModels()).compile().name == "moa"

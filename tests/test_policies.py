"""Cost and context policies of a turn, through the stand-in over HTTP: the gate (a run's
choice, a callable, a gate model), the reference budget, context fit and input scope.

Each policy is decided once (`moa_graph.gate`, `moa_graph.budget`, `moa_graph.turn`), so the
gate tests run it through every front-end: the graph, `MoAChatModel` in `create_agent`, and
`MoAMiddleware` in `create_agent`.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from moa_graph import (
    ConfigError,
    MoAChatModel,
    MoAContext,
    MoAMiddleware,
    build_moa_graph,
    build_studio_graph,
    load_config,
)
from moa_graph.prompts import CONTEXT_CUT, GATE_SYSTEM_PROMPT, GUIDANCE_TITLE
from moa_graph.tools import calculator
from tests.fakes import stub_config

QUESTION = "What is 17 * 23?"
FRONT_ENDS = ("graph", "chat_model", "middleware")


def _config(url: str, refs: tuple[Any, ...] = ("alpha", "beta"), **preset: Any) -> dict[str, Any]:
    return stub_config(url, refs=refs, **preset)


def _agent(front_end: str, stub, *, gate_fn=None, **preset: Any) -> Any:
    gate = gate_fn
    config = _config(stub.url, **preset)
    if front_end == "graph":
        return build_moa_graph("demo", tools=[calculator], config=config, gate=gate).compile()
    if front_end == "chat_model":
        model = MoAChatModel(preset="demo", config=config, gate=gate)
        return create_agent(model, tools=[calculator])
    boss = ChatOpenAI(base_url=stub.url, api_key="any", model="boss", max_retries=0)
    moa = MoAMiddleware(preset="demo", config=config, gate=gate)
    return create_agent(boss, tools=[calculator], middleware=[moa])


def _run(agent: Any, text: str = QUESTION, config: dict[str, Any] | None = None):
    """The final state and the custom events of one turn."""
    events, state = [], None
    for mode, chunk in agent.stream(
        {"messages": [HumanMessage(text)]}, config, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            state = chunk
    return state, events


def _guided(stub) -> bool:
    """Whether the acting model's first request carried guidance."""
    first = stub.requests("boss")[0]["messages"]
    return any(str(m["content"]).startswith(GUIDANCE_TITLE) for m in first)


def _gate_events(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["decision"], e["by"]) for e in events if e["type"] == "moa_gate"]


# -- the gate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_a_run_can_turn_the_references_off(stub, front_end):
    off = {"configurable": {"moa_references": "off"}}
    state, events = _run(_agent(front_end, stub), config=off)

    assert "391" in state["messages"][-1].content
    assert stub.stats() == {"boss": 2}, "no reference was asked"
    assert not _guided(stub)
    assert _gate_events(events) == [("skip", "run")]


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_a_gate_in_code_skips_small_talk_and_consults_on_the_rest(stub, front_end):
    def gate(messages):
        return "thanks" not in str(messages[-1].content).lower()

    _, events = _run(_agent(front_end, stub, gate_fn=gate), text="Thanks, that is all!")
    assert "alpha" not in stub.stats() and not _guided(stub)
    assert _gate_events(events) == [("skip", "callable")]
    stub.reset()

    _, events = _run(_agent(front_end, stub, gate_fn=gate))
    assert stub.stats()["alpha"] == 1 and _guided(stub)
    assert _gate_events(events) == [("consult", "callable")]


@pytest.mark.parametrize("front_end", ["graph", "middleware"])
@pytest.mark.parametrize(("verdict", "consulted"), [("SKIP", False), ("CONSULT", True)])
def test_a_gate_model_decides_and_is_counted(stub, front_end, verdict, consulted):
    stub.configure({"doorman": {"reply": verdict}})
    gate = {"model": {"provider": "stub", "model": "doorman", "max_retries": 0}}
    state, events = _run(_agent(front_end, stub, gate=gate))

    assert ("alpha" in stub.stats()) is consulted and _guided(stub) is consulted
    asked = stub.requests("doorman")[0]["messages"]
    assert asked[0] == {"role": "system", "content": GATE_SYSTEM_PROMPT}
    assert QUESTION in asked[1]["content"]
    (decision,) = [e for e in events if e["type"] == "moa_gate"]
    assert decision["decision"] == verdict.lower() and decision["by"] == "model"
    assert decision["latency_ms"] > 0
    gate_usage = state["usage"]["models"]["gate stub:doorman"]
    assert gate_usage["calls"] == 1 and gate_usage["input_tokens"] > 0


def test_a_chat_model_counts_its_gate_in_the_calls_usage(stub):
    stub.configure({"doorman": {"reply": "SKIP"}})
    gate = {"model": {"provider": "stub", "model": "doorman"}}
    moa = MoAChatModel(preset="demo", config=_config(stub.url, gate=gate))
    reply = moa.invoke(QUESTION)

    assert stub.stats() == {"doorman": 1, "boss": 1}
    spent = reply.response_metadata["moa_reference_usage"]
    assert set(spent["models"]) == {"gate stub:doorman"} and spent["total"]["calls"] == 1
    # The call's total: the acting model's tokens plus the gate's.
    assert reply.usage_metadata["input_tokens"] > spent["total"]["input_tokens"] > 0


def test_a_failing_gate_model_consults(stub):
    stub.configure({"doorman": {"fault": {"kind": "status", "status": 500}}})
    gate = {"model": {"provider": "stub", "model": "doorman", "max_retries": 0}}
    _, events = _run(_agent("graph", stub, gate=gate))
    assert stub.stats()["alpha"] == 1 and _guided(stub)
    assert _gate_events(events) == [("consult", "model")]


def test_a_skipped_turn_does_not_re_run_its_references_mid_turn(stub):
    agent = _agent("graph", stub, gate_fn=lambda messages: False, fanout="every_step")
    state, _ = _run(agent)
    assert "391" in state["messages"][-1].content
    assert stub.stats() == {"boss": 2}


def test_the_run_choice_comes_before_the_gate_and_bad_values_are_refused(stub):
    agent = _agent("graph", stub, gate_fn=lambda messages: False)
    _run(agent, config={"configurable": {"moa_references": "on"}})
    assert stub.stats()["alpha"] == 1
    with pytest.raises(ValueError, match="moa_references must be one of"):
        agent.invoke(
            {"messages": [HumanMessage(QUESTION)]}, {"configurable": {"moa_references": "x"}}
        )


def test_a_studio_run_chooses_through_its_context(stub):
    graph = build_studio_graph(config=_config(stub.url)).compile()
    graph.invoke({"messages": [HumanMessage(QUESTION)]}, context=MoAContext(references="off"))
    assert "alpha" not in stub.stats()
    with pytest.raises(ConfigError, match="'references' must be auto, on or off"):
        MoAContext(references="maybe")


# -- the reference budget ------------------------------------------------------------------------


def test_an_input_token_cap_leaves_out_references_and_says_why(stub):
    graph = _agent("graph", stub, refs=("alpha", "beta", "gamma"), max_reference_input_tokens=1)
    state, events = _run(graph)

    assert [(r["label"], r["status"]) for r in state["references"]] == [
        ("stub:alpha", "ok"),
        ("stub:beta", "skipped"),
        ("stub:gamma", "skipped"),
    ], "the most expensive go first; one always runs"
    assert state["references"][1]["text"].startswith("[skipped: left out to fit ")
    assert "max_reference_input_tokens 1" in state["references"][2]["text"]
    assert set(stub.stats()) == {"alpha", "boss"}
    skipped = [
        e["label"] for e in events if e["type"] == "moa_reference" and e["status"] == "skipped"
    ]
    assert sorted(skipped) == ["stub:beta", "stub:gamma"]
    assert "stub:beta (skipped)" in stub.requests("boss")[0]["messages"][1]["content"]


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_a_cost_cap_drops_the_most_expensive_reference_first(stub, front_end):
    refs = (
        {"model": "alpha", "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1.0},
        {"model": "beta", "input_cost_per_mtok": 500.0, "output_cost_per_mtok": 500.0},
        {"model": "gamma", "input_cost_per_mtok": 2.0, "output_cost_per_mtok": 2.0},
    )
    # About 1,100 tokens each (the input plus 1,024 for the answer): alpha and gamma fit.
    agent = _agent(front_end, stub, refs=refs, max_reference_cost_usd=0.01)
    _run(agent)
    assert set(stub.stats()) == {"alpha", "gamma", "boss"}
    guidance = stub.requests("boss")[0]["messages"][1]["content"]
    assert "stub:beta (skipped)" in guidance


def test_budget_keys_are_validated():
    with pytest.raises(ConfigError, match=r"max_reference_cost_usd: Input should be greater"):
        load_config(_config("http://127.0.0.1:1/v1", max_reference_cost_usd=0))
    with pytest.raises(ConfigError, match=r"reference_input: 'recent:0' is not an input scope"):
        load_config(_config("http://127.0.0.1:1/v1", reference_input="recent:0"))
    with pytest.raises(ConfigError, match=r"reference_models\[0\]\.context_window"):
        load_config(_config("http://127.0.0.1:1/v1", refs=({"model": "a", "context_window": 9},)))


# -- context fit and input scope -----------------------------------------------------------------


def _history(turns: int, size: int) -> list[Any]:
    messages: list[Any] = []
    for i in range(turns):
        messages += [HumanMessage(f"old question {i} " + "x" * size), AIMessage(f"old answer {i}")]
    return [*messages, HumanMessage(QUESTION)]


def test_a_reference_with_a_context_window_sees_the_latest_turns_that_fit(stub):
    refs = ({"model": "alpha", "context_window": 2000, "max_tokens": 500}, "beta")
    graph = _agent("graph", stub, refs=refs)
    graph.invoke({"messages": _history(40, 400)})

    small = stub.requests("alpha")[0]["messages"]
    whole = stub.requests("beta")[0]["messages"]
    assert small[0] == whole[0] and small[0]["role"] == "system", "the advisor prompt stays"
    assert small[-1]["content"] == QUESTION, "the latest question stays"
    assert small[1]["role"] == "user", "what is kept starts on a user turn"
    assert sum(len(str(m["content"])) for m in small) < 1500 * 4
    assert len(whole) == 82 and len(small) < len(whole) and small[1:] == whole[-(len(small) - 1) :]


def test_an_oversized_question_is_cut_with_a_visible_marker(stub):
    refs = ({"model": "alpha", "context_window": 1000, "max_tokens": 200}, "beta")
    question = "Please review: " + "y" * 50_000 + " What do you think?"
    _agent("graph", stub, refs=refs).invoke({"messages": [HumanMessage(question)]})

    (cut,) = [m for m in stub.requests("alpha")[0]["messages"] if m["role"] == "user"]
    marker = CONTEXT_CUT.split("{omitted}")[0]
    assert marker in cut["content"] and len(cut["content"]) < 4000
    assert cut["content"].startswith("Please review") and cut["content"].endswith("think?")
    assert stub.requests("beta")[0]["messages"][-1]["content"] == question


@pytest.mark.parametrize(("scope", "questions"), [("turn", 1), ("recent:2", 2), ("full", 4)])
def test_reference_input_chooses_how_much_history_references_see(stub, scope, questions):
    _agent("graph", stub, reference_input=scope).invoke({"messages": _history(3, 10)})
    seen = [m for m in stub.requests("alpha")[0]["messages"] if m["role"] == "user"]
    assert len(seen) == questions and seen[-1]["content"] == QUESTION


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_a_slow_gate_model_is_cut_at_its_timeout_and_the_turn_consults(stub, mode):
    import time

    stub.configure({"doorman": {"latency": 8}})
    gate = {"model": {"provider": "stub", "model": "doorman", "max_retries": 0}, "timeout_s": 0.3}
    agent = _agent("graph", stub, gate=gate)
    started = time.monotonic()
    if mode == "invoke":
        _, events = _run(agent)
    else:
        events = [e async for e in agent.astream(_ask(), stream_mode="custom")]
    assert time.monotonic() - started < 4
    (decision,) = [e for e in events if e["type"] == "moa_gate"]
    assert (decision["decision"], decision["failed"]) == ("consult", True)
    assert stub.stats()["alpha"] == 1


def test_a_chat_model_whose_gate_failed_once_answers_the_next_call(stub):
    calls = []

    def gate(messages):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the gate's own bug")
        return True

    moa = MoAChatModel(preset="demo", config=_config(stub.url), gate=gate)
    with pytest.raises(RuntimeError, match="the gate's own bug"):
        moa.invoke(QUESTION)
    reply = moa.invoke(QUESTION)  # the failed turn is not left half-made in the cache
    assert "391" in str(reply.content) and stub.stats()["alpha"] == 1


def test_a_chat_model_turn_asked_off_then_on_runs_its_references_the_second_time(stub):
    moa = MoAChatModel(preset="demo", config=_config(stub.url))
    moa.invoke(QUESTION, references="off")
    assert "alpha" not in stub.stats()
    moa.invoke(QUESTION, references="on")
    assert stub.stats()["alpha"] == 1 and _guided_last(stub)


def _ask(text: str = QUESTION) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


def _guided_last(stub) -> bool:
    last = stub.requests("boss")[-1]["messages"]
    return any(str(m["content"]).startswith(GUIDANCE_TITLE) for m in last)

"""`quorum: K`: a layer's fan-out ends once K references answered; the rest are cut.

Through the stand-in over HTTP, for the graph (`invoke` and `ainvoke`), `MoAChatModel` and
`MoAMiddleware`; with a grace, a deadline, two layers, and a checkpointed resume.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import (
    ConfigError,
    MoAAggregatorError,
    MoAChatModel,
    MoAMiddleware,
    build_moa_graph,
    load_config,
)
from moa_graph.prompts import GUIDANCE_TITLE, QUORUM_CUT
from moa_graph.tools import calculator
from tests.fakes import stub_config

QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}
SLOW_S = 8.0
"""A straggler's latency: far beyond every bound below, so a fast turn proves the cut."""
FAST_TURN_S = 4.0


def _config(url: str, **preset: Any) -> dict[str, Any]:
    return stub_config(url, refs=("alpha", "beta", "gamma"), **preset)


def _graph(stub, checkpointer=None, **preset):
    config = _config(stub.url, **preset)
    return build_moa_graph("demo", tools=[calculator], config=config).compile(
        checkpointer=checkpointer
    )


def _guidance(stub) -> str:
    first = stub.requests("boss")[0]["messages"]
    (text,) = [m["content"] for m in first if str(m["content"]).startswith(GUIDANCE_TITLE)]
    return text


def _statuses(references: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["label"], r["status"]) for r in references]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_the_graph_aggregates_once_the_quorum_answered(stub, mode):
    stub.configure({"gamma": {"latency": SLOW_S}})
    graph = _graph(stub, quorum=2)
    started = time.monotonic()
    out = graph.invoke(QUESTION) if mode == "invoke" else await graph.ainvoke(QUESTION)
    elapsed = time.monotonic() - started

    assert elapsed < FAST_TURN_S, f"the turn waited for the straggler ({elapsed:.1f}s)"
    assert _statuses(out["references"]) == [
        ("stub:alpha", "ok"),
        ("stub:beta", "ok"),
        ("stub:gamma", "skipped"),
    ]
    gamma = out["references"][2]
    assert gamma["text"] == QUORUM_CUT.format(quorum=2)
    assert gamma["error_type"] == "QuorumCut"
    assert "Unavailable references: stub:gamma (skipped)." in _guidance(stub)
    assert "391" in out["messages"][-1].content
    if mode == "ainvoke":  # the request is cancelled: the stand-in sees the client go
        deadline = time.monotonic() + 3
        while stub.disconnects().get("gamma", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stub.disconnects().get("gamma") == 1


async def test_a_straggler_that_answers_within_the_grace_is_kept(stub):
    stub.configure({"gamma": {"latency": 0.4}})
    out = await _graph(stub, quorum=2, quorum_grace_s=3).ainvoke(QUESTION)
    assert [r["status"] for r in out["references"]] == ["ok", "ok", "ok"]


async def test_the_grace_bounds_the_wait_for_the_rest(stub):
    stub.configure({"gamma": {"latency": SLOW_S}})
    started = time.monotonic()
    out = await _graph(stub, quorum=2, quorum_grace_s=0.5).ainvoke(QUESTION)
    elapsed = time.monotonic() - started

    assert out["references"][2]["status"] == "skipped"
    assert 0.5 <= out["references"][2]["latency_ms"] / 1000 < FAST_TURN_S
    assert elapsed < FAST_TURN_S


async def test_a_quorum_that_cannot_be_reached_leaves_the_deadline_in_charge(stub):
    stub.configure({"beta": {"latency": SLOW_S}, "gamma": {"latency": SLOW_S}})
    started = time.monotonic()
    out = await _graph(stub, quorum=2, references_deadline_s=0.5).ainvoke(QUESTION)

    assert time.monotonic() - started < FAST_TURN_S
    assert _statuses(out["references"]) == [
        ("stub:alpha", "ok"),
        ("stub:beta", "failed"),
        ("stub:gamma", "failed"),
    ]
    assert out["references"][1]["text"] == "[failed: timed out after 0.5s]"


async def test_failures_do_not_count_toward_the_quorum(stub):
    stub.configure(
        {"alpha": {"fault": {"kind": "status", "status": 500}}, "gamma": {"latency": 0.3}}
    )
    out = await _graph(stub, quorum=2).ainvoke(QUESTION)
    assert _statuses(out["references"]) == [
        ("stub:alpha", "failed"),
        ("stub:beta", "ok"),
        ("stub:gamma", "ok"),
    ]


async def test_each_layer_has_its_own_quorum(stub):
    stub.configure({"gamma": {"latency": SLOW_S}})
    started = time.monotonic()
    out = await _graph(stub, quorum=2, layers=2).ainvoke(QUESTION)

    assert time.monotonic() - started < 2 * FAST_TURN_S
    assert [(r["layer"], r["status"]) for r in out["references"]] == [
        (1, "ok"),
        (1, "ok"),
        (1, "skipped"),
        (2, "ok"),
        (2, "ok"),
        (2, "skipped"),
    ]


def test_a_resumed_turn_does_not_ask_the_cut_references_again(stub):
    stub.configure(
        {
            "gamma": {"latency": SLOW_S},
            "boss": {"fault": {"kind": "status", "status": 500, "times": 1}},
        }
    )
    graph = _graph(stub, checkpointer=InMemorySaver(), quorum=2)
    thread = {"configurable": {"thread_id": "quorum"}}
    with pytest.raises(MoAAggregatorError):
        graph.invoke(QUESTION, thread)

    out = graph.invoke(None, thread)

    assert "391" in out["messages"][-1].content
    assert [r["status"] for r in out["references"]] == ["ok", "ok", "skipped"]
    assert (stub.stats()["alpha"], stub.stats()["gamma"]) == (1, 1)


@pytest.mark.parametrize("front_end", ["chat_model", "middleware"])
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_the_chat_model_and_the_middleware_keep_the_quorum_too(stub, front_end, mode):
    stub.configure({"gamma": {"latency": SLOW_S}})
    config = _config(stub.url, quorum=2)
    if front_end == "chat_model":
        agent = create_agent(MoAChatModel(preset="demo", config=config), tools=[calculator])
    else:
        model = ChatOpenAI(base_url=stub.url, api_key="any", model="boss", max_retries=0)
        moa = MoAMiddleware(preset="demo", config=config)
        agent = create_agent(model, tools=[calculator], middleware=[moa])
    started = time.monotonic()
    out = agent.invoke(QUESTION) if mode == "invoke" else await agent.ainvoke(QUESTION)

    assert time.monotonic() - started < FAST_TURN_S
    assert "391" in out["messages"][-1].content
    assert "Unavailable references: stub:gamma (skipped)." in _guidance(stub)
    assert stub.stats()["gamma"] == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("quorum", 0, "moa.presets.demo.quorum: Input should be greater than or equal to 1"),
        ("quorum_grace_s", -1, "moa.presets.demo.quorum_grace_s: Input should be greater"),
    ],
)
def test_quorum_keys_are_validated(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config("http://127.0.0.1:1/v1", **{key: value}))


def test_without_a_quorum_every_reference_is_awaited(stub):
    stub.configure({"gamma": {"latency": 0.5}})
    out = _graph(stub).invoke(QUESTION)
    assert [r["status"] for r in out["references"]] == ["ok", "ok", "ok"]


async def test_the_quorum_table_is_emptied_after_a_run_and_after_a_cancelled_one(stub):
    import asyncio

    from moa_graph import quorum

    stub.configure({"gamma": {"latency": SLOW_S}})
    await _graph(stub, quorum=2).ainvoke(QUESTION)
    assert quorum._QUORUMS == {}

    stub.configure({"beta": {"latency": SLOW_S}, "gamma": {"latency": SLOW_S}})
    run = asyncio.ensure_future(_graph(stub, quorum=2).ainvoke(QUESTION))
    await asyncio.sleep(1.0)  # alpha answered; beta and gamma wait for a quorum never reached
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert quorum._QUORUMS == {}, "cancelled slots report, and the layer is forgotten"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_slot_that_starts_after_the_cut_sends_nothing(mode):
    from moa_graph.quorum import Quorum, QuorumCut

    reached = Quorum(needed=1, size=3, grace_s=0)
    reached.report(ok=True)
    sent: list[str] = []

    async def request() -> str:
        sent.append("async")
        return "answer"

    with pytest.raises(QuorumCut):
        if mode == "sync":
            reached.within(5.0, lambda: sent.append("sync"))
        else:
            await reached.awithin(5.0, request())
    assert sent == []


def test_a_quorum_the_preset_can_never_reach_is_refused():
    with pytest.raises(ConfigError, match="quorum 4 can never be reached: the preset has 3"):
        load_config(_config("http://127.0.0.1:1/v1", quorum=4))

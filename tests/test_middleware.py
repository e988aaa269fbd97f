"""`MoAMiddleware` in `create_agent`: references once per turn, guidance in the request only."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, PIIMiddleware
from langchain.agents.structured_output import ProviderStrategy
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from moa_graph import MoAMiddleware, MoAToolLoopError
from moa_graph.prompts import GUIDANCE_TITLE, TOOL_ROUNDS_SPENT
from moa_graph.testing import StubServer
from moa_graph.tools import calculator

QUESTION = "What is 17 * 23?"
REFERENCES = {"stub:alpha", "stub:beta"}


def _config(url: str, **preset: Any) -> dict[str, Any]:
    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {
                "review": {
                    "reference_models": [
                        {"provider": "stub", "model": name, "max_retries": 0}
                        for name in ("alpha", "beta")
                    ],
                    # Not called under the middleware: the agent's own model acts.
                    "aggregator": {"provider": "stub", "model": "unused"},
                    **preset,
                }
            },
        }
    }


class Verdict(BaseModel):
    """A verdict on a claim."""

    holds: bool


def _agent(
    stub: StubServer,
    *,
    before: tuple[AgentMiddleware[Any, Any], ...] = (),
    checkpointer: InMemorySaver | None = None,
    **preset: Any,
) -> Any:
    model = ChatOpenAI(base_url=stub.url, api_key="any", model="boss", max_retries=0)
    moa = MoAMiddleware(preset="review", config=_config(stub.url, **preset))
    return create_agent(
        model, tools=[calculator], middleware=[*before, moa], checkpointer=checkpointer
    )


def _ask(text: str = QUESTION) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


def _is_guidance(message: dict[str, Any]) -> bool:
    return message["role"] == "user" and str(message["content"]).startswith(GUIDANCE_TITLE)


def _calc(expression: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}]}


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_references_run_once_for_a_tool_round_trip(stub, mode):
    agent = _agent(stub)
    out = agent.invoke(_ask()) if mode == "invoke" else await agent.ainvoke(_ask())

    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]
    assert out["messages"][-1].content == "The result is 391."
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 2}, "the preset's aggregator idles"


def test_the_guidance_follows_the_human_message_and_is_never_stored(stub):
    out = _agent(stub).invoke(_ask())

    first, second = stub.requests("boss")
    for body in (first, second):
        assert body["messages"][0] == {"role": "user", "content": QUESTION}
        assert _is_guidance(body["messages"][1])
        assert sum(map(_is_guidance, body["messages"])) == 1
    assert second["messages"][: len(first["messages"])] == first["messages"], "cached prefix"
    assert "you are the aggregator (openai:boss)" in first["messages"][1]["content"]
    assert all(GUIDANCE_TITLE not in str(m.content) for m in out["messages"])


def test_references_and_usage_are_in_the_returned_state(stub):
    out = _agent(stub).invoke(_ask())

    assert [(r["label"], r["status"], r["layer"]) for r in out["references"]] == [
        ("stub:alpha", "ok", 1),
        ("stub:beta", "ok", 1),
    ]
    models = out["usage"]["models"]
    assert set(models) == {"reference stub:alpha", "reference stub:beta", "aggregator openai:boss"}
    assert models["aggregator openai:boss"]["calls"] == 2
    assert out["usage"]["total"]["calls"] == 4
    assert out["usage"]["total"]["input_tokens"] > 0
    assert not any(key.startswith("reference_") for key in out), "bookkeeping stays private"


def test_a_checkpointed_thread_runs_references_again_for_its_second_turn_only(stub):
    agent = _agent(stub, checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "two-turns"}}
    agent.invoke(_ask(), thread)
    state = agent.get_state(thread).values
    assert state["reference_turn"] == state["messages"][0].id, "checkpointed with the thread"

    out = agent.invoke(_ask("And what is 2 + 2?"), thread)

    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 4}
    assert out["usage"]["total"]["calls"] == 4, "usage covers this turn only"
    second_turn = stub.requests("boss")[2]["messages"]
    guidance = [i for i, m in enumerate(second_turn) if _is_guidance(m)]
    assert guidance == [len(second_turn) - 1], "after the second turn's human message"


def test_a_resumed_turn_does_not_pay_for_its_references_again(stub):
    stub.configure({"boss": {"fault": {"kind": "status", "status": 500, "times": 1}}})
    agent = _agent(stub, checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "resumed"}}
    with pytest.raises(openai.InternalServerError):
        agent.invoke(_ask(), thread)
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 1}

    out = agent.invoke(None, thread)

    assert out["messages"][-1].content == "The result is 391."
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 3}
    assert [r["status"] for r in out["references"]] == ["ok", "ok"]


def test_two_layers_run_before_the_first_model_call(stub):
    out = _agent(stub, layers=2).invoke(_ask())

    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 2}
    assert [(r["label"], r["layer"]) for r in out["references"]] == [
        ("stub:alpha", 1),
        ("stub:beta", 1),
        ("stub:alpha", 2),
        ("stub:beta", 2),
    ]
    second_layer = stub.requests("alpha")[1]["messages"][-1]["content"]
    assert "Other advisors on the panel answered" in second_layer


def test_a_failing_reference_is_reported_and_the_agent_still_answers(stub):
    stub.configure({"beta": {"fault": {"kind": "status", "status": 500}}})
    out = _agent(stub).invoke(_ask())

    assert out["messages"][-1].content == "The result is 391."
    alpha, beta = out["references"]
    assert (alpha["status"], beta["status"]) == ("ok", "failed")
    assert beta["text"].startswith("[failed: ")
    guidance = stub.requests("boss")[0]["messages"][1]["content"]
    assert "stub:beta (failed)" in guidance


def test_a_disabled_preset_calls_the_model_plainly(stub):
    out = _agent(stub, enabled=False).invoke(_ask())

    assert stub.stats() == {"boss": 2}
    assert out["references"] == []
    assert not any(_is_guidance(m) for b in stub.requests("boss") for m in b["messages"])
    assert set(out["usage"]["models"]) == {"aggregator openai:boss"}


def test_every_n_2_re_runs_the_references_on_steps_1_and_3_of_a_tool_loop(stub):
    script = [_calc("1 + 1"), _calc("2 + 2"), _calc("3 + 3"), "Done."]
    stub.configure({"boss": {"script": script}})
    out = _agent(stub, fanout="every_n:2").invoke(_ask())

    assert out["messages"][-1].content == "Done."
    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 4}
    rerun = stub.requests("alpha")[1]["messages"]
    assert any("[called tool: calculator" in str(m["content"]) for m in rerun)
    bodies = stub.requests("boss")
    where = [[m["role"] for m in b["messages"]].index("user", 1) for b in bodies]
    # Steps 1 and 2 read step 1's advice after the question; 3 and 4 read step 3's after
    # the two tool rounds it saw (each an assistant turn and its result).
    assert where == [1, 1, 5, 5]
    assert out["usage"]["models"]["reference stub:alpha"]["calls"] == 2


def test_a_spent_tool_budget_asks_the_model_to_answer(stub):
    out = _agent(stub, max_tool_rounds=0).invoke(_ask())

    (body,) = stub.requests("boss")
    assert body["tool_choice"] == "none"
    assert body["tools"][0]["function"]["name"] == "calculator", "still described"
    assert body["messages"][-1]["content"] == TOOL_ROUNDS_SPENT.format(rounds=0)
    assert [m.type for m in out["messages"]] == ["human", "ai"]


def test_a_model_that_calls_tools_past_its_budget_ends_the_turn(stub):
    stub.configure({"boss": {"script": [_calc("1 + 1"), _calc("2 + 2")]}})
    with pytest.raises(MoAToolLoopError, match="'review' stopped after 1 tool rounds"):
        _agent(stub, max_tool_rounds=1).invoke(_ask())
    assert stub.stats()["boss"] == 2


def test_a_provider_strategy_agent_keeps_its_tool_budget(stub):
    # ProviderStrategy structures the answer with response_format, not a tool: still bounded.
    stub.configure({"boss": {"script": [_calc("1 + 1"), _calc("2 + 2")]}})
    model = ChatOpenAI(base_url=stub.url, api_key="any", model="boss", max_retries=0)
    moa = MoAMiddleware(preset="review", config=_config(stub.url, max_tool_rounds=1))
    agent = create_agent(
        model, tools=[calculator], middleware=[moa], response_format=ProviderStrategy(Verdict)
    )
    with pytest.raises(MoAToolLoopError):
        agent.invoke(_ask())
    first, last = stub.requests("boss")
    note = TOOL_ROUNDS_SPENT.format(rounds=1)
    assert first["messages"][-1]["content"] != note
    assert last["messages"][-1] == {"role": "user", "content": note}


def test_custom_events_announce_each_reference_and_each_model_step(stub):
    events = list(_agent(stub).stream(_ask(), stream_mode="custom"))

    references = [e for e in events if e["type"] == "moa_reference"]
    assert sorted((e["label"], e["status"]) for e in references) == [
        ("stub:alpha", "ok"),
        ("stub:alpha", "running"),
        ("stub:beta", "ok"),
        ("stub:beta", "running"),
    ]
    aggregator = [e for e in events if e["type"] == "moa_aggregator"]
    assert aggregator == 2 * [
        {"type": "moa_aggregator", "label": "openai:boss", "status": "running", "references_ok": 2}
    ]


def test_messages_mode_streams_the_acting_models_tokens_alone(stub):
    chunks = list(_agent(stub).stream(_ask(), stream_mode="messages"))

    models = [
        (meta["langgraph_node"], meta["moa_label"]) for _, meta in chunks if "moa_label" in meta
    ]
    assert models and set(models) == {("model", "openai:boss")}, "references are nostream"
    assert "The result is 391." in "".join(str(c.content) for c, _ in chunks)


async def test_the_models_runs_carry_the_graphs_names_and_tags(stub):
    runs = [
        (e["name"], e["tags"])
        async for e in _agent(stub).astream_events(_ask(), version="v2")
        if e["event"] == "on_chat_model_start"
    ]
    names = sorted(name for name, _ in runs)
    assert names == [
        "moa_aggregator:openai:boss",
        "moa_aggregator:openai:boss",
        "moa_reference:stub:alpha",
        "moa_reference:stub:beta",
    ]
    assert all(("moa:aggregator" in tags) != ("moa:reference" in tags) for _, tags in runs)


def test_pii_middleware_before_it_keeps_the_address_from_every_model(stub):
    pii = PIIMiddleware("email", strategy="redact")
    out = _agent(stub, before=(pii,)).invoke(_ask(f"Mail ada@example.com: {QUESTION}"))

    sent = [str(b) for name in ("alpha", "beta", "boss") for b in stub.requests(name)]
    assert len(sent) == 4
    assert not any("ada@example.com" in body for body in sent)
    assert out["messages"][-1].content == "The result is 391."


def test_import_moa_graph_needs_no_langchain_agents():
    # A base install has no `langchain` (the extra): the middleware loads on first use.
    import subprocess
    import sys

    script = (
        "import sys, moa_graph\n"
        "assert not any(m == 'langchain' or m.startswith('langchain.') for m in sys.modules)\n"
        "assert moa_graph.MoAMiddleware.__name__ == 'MoAMiddleware'\n"
        "assert 'langchain.agents' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"

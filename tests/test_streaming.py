"""Streaming, progress events, run names and usage accounting, over HTTP to the stand-in."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage

from moa_graph import MoAChatModel, build_moa_graph, load_config
from moa_graph.testing import StubServer
from moa_graph.tools import calculator

QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}


@pytest.fixture
def stub():
    server = StubServer(models={"alpha": {"latency": 0.05}, "beta": {"latency": 0.1}})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _config(url: str, **prices) -> dict:
    alpha = {"provider": "stub", "model": "alpha", **prices.get("alpha", {})}
    beta = {"provider": "stub", "model": "beta", **prices.get("beta", {})}
    boss = {"provider": "stub", "model": "boss", **prices.get("boss", {})}
    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {"demo": {"reference_models": [alpha, beta], "aggregator": boss}},
        }
    }


def _graph(stub, **prices):
    return build_moa_graph("demo", tools=[calculator], config=_config(stub.url, **prices)).compile()


async def test_custom_events_mark_each_reference_and_each_aggregator_step(stub):
    events = [e async for e in _graph(stub).astream(QUESTION, stream_mode="custom")]

    refs = [e for e in events if e["type"] == "moa_reference"]
    assert sorted((e["index"], e["status"]) for e in refs) == [
        (0, "ok"),
        (0, "running"),
        (1, "ok"),
        (1, "running"),
    ]
    for index, label in [(0, "stub:alpha"), (1, "stub:beta")]:
        start, end = [e for e in refs if e["index"] == index]
        assert start == {
            "type": "moa_reference",
            "index": index,
            "label": label,
            "status": "running",
            "latency_ms": None,
            "layer": 1,
        }
        assert end["status"] == "ok" and end["latency_ms"] >= 50
    aggregator = [e for e in events if e["type"] == "moa_aggregator"]
    assert len(aggregator) == 2  # the first step and the step after the tool result
    assert aggregator[0] == {
        "type": "moa_aggregator",
        "label": "stub:boss",
        "status": "running",
        "references_ok": 2,
    }
    assert events.index(aggregator[0]) > max(events.index(e) for e in refs)


async def test_messages_mode_streams_only_the_aggregators_tokens(stub):
    chunks = []
    final = None
    async for mode, part in _graph(stub).astream(QUESTION, stream_mode=["messages", "values"]):
        if mode == "messages":
            chunks.append(part)
        else:
            final = part
    assert chunks
    # AI tokens come from the aggregator only (the tools node streams its ToolMessage).
    assert {meta["langgraph_node"] for m, meta in chunks if m.type != "tool"} == {"aggregator"}
    assert not any(meta["langgraph_node"] == "reference" for _, meta in chunks)
    last_step = [m for m, meta in chunks if isinstance(m, AIMessageChunk) and m.content]
    assert "".join(m.content for m in last_step) == final["messages"][-1].content


async def test_reference_runs_are_filtered_out_of_astream_events_by_tag(stub):
    graph = _graph(stub)
    question = {"messages": [("user", "Tell me about tea.")]}

    def streamed(events):
        return {
            e["metadata"].get("moa_role") for e in events if e["event"] == "on_chat_model_stream"
        }

    every = [e async for e in graph.astream_events(question, version="v2")]
    answer_only = [
        e
        async for e in graph.astream_events(question, version="v2", exclude_tags=["moa:reference"])
    ]

    assert streamed(every) == {"reference", "aggregator"}, "references stream under events"
    assert streamed(answer_only) == {"aggregator"}
    assert not any("moa:reference" in e.get("tags", []) for e in answer_only)


def test_model_calls_carry_langsmith_names_tags_and_metadata(stub):
    class Recorder(BaseCallbackHandler):
        def __init__(self):
            self.starts = []

        def on_chat_model_start(self, serialized, messages, *, tags=None, metadata=None, **kw):
            self.starts.append((kw.get("name"), tags or [], metadata or {}))

    recorder = Recorder()
    _graph(stub).invoke(QUESTION, {"callbacks": [recorder]})

    by_name = {}
    for name, tags, metadata in recorder.starts:
        by_name.setdefault(name, []).append((tags, metadata))
    assert set(by_name) == {
        "moa_reference:stub:alpha",
        "moa_reference:stub:beta",
        "moa_aggregator:stub:boss",
    }
    ((alpha_tags, alpha_meta),) = by_name["moa_reference:stub:alpha"]
    assert {"moa:reference", "nostream"} <= set(alpha_tags)
    assert alpha_meta["moa_index"] == 0 and alpha_meta["moa_label"] == "stub:alpha"
    assert len(by_name["moa_aggregator:stub:boss"]) == 2
    for tags, metadata in by_name["moa_aggregator:stub:boss"]:
        assert "moa:aggregator" in tags and "nostream" not in tags
        assert metadata["moa_label"] == "stub:boss"


def test_usage_sums_every_call_per_model_and_in_total(stub):
    result = _graph(stub).invoke(QUESTION)
    usage = result["usage"]

    reported = {
        "reference stub:alpha": result["references"][0]["usage"],
        "reference stub:beta": result["references"][1]["usage"],
    }
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    for key, expected in reported.items():
        assert usage["models"][key]["calls"] == 1
        assert usage["models"][key]["input_tokens"] == expected["input_tokens"]
        assert usage["models"][key]["output_tokens"] == expected["output_tokens"]
    boss = usage["models"]["aggregator stub:boss"]
    assert boss["calls"] == 2
    assert boss["input_tokens"] == sum(m.usage_metadata["input_tokens"] for m in answers)
    assert boss["output_tokens"] == sum(m.usage_metadata["output_tokens"] for m in answers)
    assert usage["total"]["calls"] == 4
    assert usage["total"]["input_tokens"] == sum(
        m["input_tokens"] for m in usage["models"].values()
    )
    assert "cost_usd" not in usage["total"]


def test_each_model_is_priced_at_its_own_rate(stub):
    prices = {
        "alpha": {"input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
        "boss": {"input_cost_per_mtok": 10.0, "output_cost_per_mtok": 30.0},
    }
    usage = _graph(stub, **prices).invoke(QUESTION)["usage"]
    models = usage["models"]
    alpha, boss = models["reference stub:alpha"], models["aggregator stub:boss"]
    assert alpha["cost_usd"] == pytest.approx(
        (alpha["input_tokens"] * 1.0 + alpha["output_tokens"] * 2.0) / 1e6
    )
    assert boss["cost_usd"] == pytest.approx(
        (boss["input_tokens"] * 10.0 + boss["output_tokens"] * 30.0) / 1e6
    )
    assert "cost_usd" not in models["reference stub:beta"]  # unpriced
    assert usage["total"]["cost_usd"] == pytest.approx(alpha["cost_usd"] + boss["cost_usd"])


def test_usage_is_reset_at_each_new_user_turn(stub):
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_moa_graph("demo", config=_config(stub.url)).compile(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "u"}}
    graph.invoke({"messages": [HumanMessage("first")]}, thread)
    second = graph.invoke({"messages": [HumanMessage("second")]}, thread)
    assert second["usage"]["total"]["calls"] == 3


async def test_moa_chat_model_tokens_stream_once_through_an_agent(stub):
    agent = create_agent(MoAChatModel(preset="demo", config=_config(stub.url)), tools=[calculator])
    streamed = []
    final = None
    async for mode, part in agent.astream(
        {"messages": [("user", "Say hello")]}, stream_mode=["messages", "values"]
    ):
        if mode == "messages":
            message, _ = part
            if isinstance(message, AIMessageChunk):
                streamed.append(message.content)
        else:
            final = part
    text = final["messages"][-1].content
    assert text.startswith("[boss]")
    assert "".join(streamed) == text  # no doubled tokens, no reference tokens


def test_moa_chat_model_in_an_agent_emits_the_graphs_custom_events(stub):
    agent = create_agent(MoAChatModel(preset="demo", config=_config(stub.url)), tools=[calculator])
    events = list(agent.stream({"messages": [("user", "What is 17 * 23?")]}, stream_mode="custom"))

    steps = [e for e in events if e["type"] == "moa_aggregator"]
    assert steps == 2 * [
        {"type": "moa_aggregator", "label": "stub:boss", "status": "running", "references_ok": 2}
    ], "one event per aggregator step, as the graph emits"
    assert {e["status"] for e in events if e["type"] == "moa_reference"} == {"running", "ok"}


def test_prices_are_validated_in_config_files(stub):
    bad = _config(stub.url, alpha={"input_cost_per_mtok": "cheap"})
    with pytest.raises(ValueError, match=r"reference_models\[0\]\.input_cost_per_mtok"):
        load_config(bad)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 10_000),
            st.integers(0, 10_000),
            st.one_of(st.none(), st.floats(0.1, 50.0)),
        ),
        max_size=12,
    )
)
def test_the_usage_reducer_adds_up_whatever_the_order(calls):
    from moa_graph.config import ModelSpec
    from moa_graph.usage import add_usage, call_usage

    usage = add_usage(None, None)
    for model, tokens_in, tokens_out, price in calls:
        spec = ModelSpec(provider="stub", model=model, input_cost_per_mtok=price)
        reply = AIMessage(
            "x",
            usage_metadata={
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        )
        before = repr(usage)
        update = call_usage("reference", spec, reply)
        merged = add_usage(usage, update)
        assert repr(usage) == before  # the reducer leaves its inputs alone
        usage = merged

    assert usage["total"]["calls"] == len(calls)
    assert usage["total"]["input_tokens"] == sum(c[1] for c in calls)
    assert usage["total"]["output_tokens"] == sum(c[2] for c in calls)
    for model in {c[0] for c in calls}:
        mine = [c for c in calls if c[0] == model]
        counted = usage["models"][f"reference stub:{model}"]
        assert counted["calls"] == len(mine)
        assert counted["input_tokens"] == sum(c[1] for c in mine)
    priced = [c[1] * c[3] / 1e6 for c in calls if c[3] is not None]
    assert ("cost_usd" in usage["total"]) == bool(priced)
    if priced:
        assert usage["total"]["cost_usd"] == pytest.approx(sum(priced))

"""The MoA graph through real HTTP: `ChatOpenAI` against the offline stand-in server."""

import asyncio
import logging

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import MoAAggregatorError, build_moa_graph, load_config
from moa_graph.prompts import REFERENCE_SYSTEM_PROMPT
from moa_graph.providers import default_model_factory
from moa_graph.testing import StubServer
from moa_graph.tools import calculator
from tests.fakes import FakeChatModel

SECRET = "sk-test-0123456789abcdef-SECRET"


@pytest.fixture
def server():
    server = StubServer()
    url = server.start()
    try:
        yield server, url
    finally:
        server.stop()


def _config(url: str, *, key_env: str | None = None, refs=("alpha", "beta")) -> dict:
    provider = {"base_url": url} | ({"api_key_env": key_env} if key_env else {})
    return {
        "moa": {
            "providers": {"stub": provider},
            "presets": {
                "demo": {
                    "reference_models": [{"provider": "stub", "model": m} for m in refs],
                    "aggregator": {"provider": "stub", "model": "boss"},
                }
            },
        }
    }


async def test_a_tool_turn_over_http_answers_with_the_tool_result(server):
    stub, url = server
    graph = build_moa_graph("demo", tools=[calculator], config=_config(url)).compile()
    out = await graph.ainvoke({"messages": [HumanMessage("What is 17 * 23?")]})

    assert "391" in out["messages"][-1].content
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]
    assert [r["label"] for r in out["references"]] == ["stub:alpha", "stub:beta"]
    assert all(r["status"] == "ok" and "usage" in r for r in out["references"])
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 2}


def test_references_see_the_trimmed_view_and_no_tools_over_http(server):
    stub, url = server
    graph = build_moa_graph("demo", tools=[calculator], config=_config(url)).compile()
    graph.invoke(
        {"messages": [SystemMessage("caller system prompt"), HumanMessage("What is 2 + 2?")]}
    )

    (alpha,) = stub.requests("alpha")
    assert [(m["role"], m["content"]) for m in alpha["messages"]] == [
        ("system", REFERENCE_SYSTEM_PROMPT),
        ("user", "What is 2 + 2?"),
    ]
    assert "tools" not in alpha
    first, second = stub.requests("boss")
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["system", "user", "user"]
    assert first["messages"][2]["content"].startswith("[MoA guidance")
    # Tool step 2 resends step 1's input unchanged, then the tool traffic.
    assert second["messages"][:3] == first["messages"]
    assert [m["role"] for m in second["messages"][3:]] == ["assistant", "tool"]


def test_a_reference_http_error_is_isolated(server):
    stub, url = server
    stub.configure({"beta": {"fault": {"kind": "status", "status": 400}}})
    out = (
        build_moa_graph("demo", config=_config(url))
        .compile()
        .invoke({"messages": [HumanMessage("hello")]})
    )
    alpha, beta = out["references"]
    assert alpha["status"] == "ok"
    assert beta["status"] == "failed"
    assert beta["text"].startswith("[failed: ") and "Error code: 400" in beta["text"]
    assert out["messages"][-1].content


def test_keys_stay_out_of_state_checkpoints_errors_and_logs(server, monkeypatch, caplog):
    stub, url = server
    monkeypatch.setenv("MOA_TEST_KEY", SECRET)
    config = load_config(_config(url, key_env="MOA_TEST_KEY", refs=("alpha", "leaky")))
    http_models = default_model_factory(config.providers)

    def factory(spec):
        # One reference fails with the key in its message, as a careless provider might.
        if spec.model == "leaky":
            return FakeChatModel(script=[RuntimeError(f"invalid key {SECRET} for leaky")])
        return http_models(spec)

    saver = InMemorySaver()
    graph = build_moa_graph("demo", config=config, model_factory=factory).compile(
        checkpointer=saver
    )
    thread = {"configurable": {"thread_id": "k"}}
    with caplog.at_level(logging.DEBUG):
        out = graph.invoke({"messages": [HumanMessage("hello")]}, thread)

    # The key did travel, in the Authorization header only (the stand-in saw a request).
    assert stub.stats()["alpha"] == 1
    leaky = out["references"][1]
    assert leaky["status"] == "failed" and "***" in leaky["text"]
    assert SECRET not in repr(out)
    assert SECRET not in repr(graph.get_state(thread))
    stored = repr(saver.storage) + repr(saver.writes) + repr(saver.blobs)
    assert SECRET.encode() not in stored.encode() and SECRET not in stored
    assert SECRET not in caplog.text
    assert not any(SECRET in str(r) for r in stub.requests())


def test_an_aggregator_error_names_the_model_and_not_the_key(server, monkeypatch):
    stub, url = server
    monkeypatch.setenv("MOA_TEST_KEY", SECRET)
    stub.configure({"boss": {"fault": {"kind": "status", "status": 400}}})
    graph = build_moa_graph("demo", config=_config(url, key_env="MOA_TEST_KEY")).compile()
    with pytest.raises(MoAAggregatorError) as info:
        graph.invoke({"messages": [HumanMessage("hello")]})
    assert str(info.value).startswith("aggregator stub:boss failed: ")
    assert "Error code: 400" in str(info.value)
    assert SECRET not in str(info.value)


def test_a_missing_key_fails_the_reference_with_the_variable_name(server, monkeypatch):
    stub, url = server
    monkeypatch.delenv("MOA_ABSENT_KEY", raising=False)
    config = _config(url)
    config["moa"]["providers"]["locked"] = {"base_url": url, "api_key_env": "MOA_ABSENT_KEY"}
    config["moa"]["presets"]["demo"]["reference_models"].append(
        {"provider": "locked", "model": "gamma"}
    )
    out = (
        build_moa_graph("demo", config=config)
        .compile()
        .invoke({"messages": [HumanMessage("hello")]})
    )
    gamma = out["references"][2]
    assert gamma["status"] == "failed"
    assert "environment variable MOA_ABSENT_KEY is not set" in gamma["text"]
    assert "gamma" not in stub.stats()


def test_one_compiled_graph_serves_successive_event_loops(server):
    # A notebook or a script calling asyncio.run twice: the second loop must not inherit
    # the first loop's (closed) HTTP connections.
    stub, url = server
    graph = build_moa_graph("demo", config=_config(url)).compile()
    for question in ("first", "second"):
        out = asyncio.run(graph.ainvoke({"messages": [HumanMessage(question)]}))
        assert [r["status"] for r in out["references"]] == ["ok", "ok"]
        assert question in out["messages"][-1].content
    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 2}

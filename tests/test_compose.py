"""The MoA graph inside larger LangGraph agents, through the stand-in over HTTP."""

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from moa_graph import build_moa_graph
from moa_graph.examples.router import build_router_graph, is_hard
from moa_graph.examples.wrapper import build_review_graph
from moa_graph.testing import StubServer, offline_config, offline_stub_models
from moa_graph.tools import calculator


@pytest.fixture
def stub():
    models = {name: {"latency": 0.0} for name in offline_stub_models()}
    server = StubServer(models=models)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _moa(stub):
    return build_moa_graph("demo", tools=[calculator], config=offline_config(stub.url)).compile()


def test_as_a_subgraph_node_it_checkpoints_with_the_parent_and_streams_inner_nodes(stub):
    parent = StateGraph(MessagesState)
    parent.add_node("moa", _moa(stub))
    parent.add_edge(START, "moa")
    saver = InMemorySaver()
    graph = parent.compile(checkpointer=saver)
    thread = {"configurable": {"thread_id": "p1"}}

    seen = []
    for namespace, update in graph.stream(
        {"messages": [HumanMessage("What is 17 * 23?")]}, thread, subgraphs=True
    ):
        seen += [(namespace[0].split(":")[0] if namespace else "", node) for node in update]

    inner = [node for ns, node in seen if ns == "moa"]
    assert inner == [
        "fan_out",
        "reference",
        "reference",
        "reference",
        "join",
        "aggregator",
        "tools",
        "aggregator",
    ]
    assert ("", "moa") in seen
    # The parent's checkpointer stored the subgraph's checkpoints under its namespace.
    namespaces = {c.config["configurable"]["checkpoint_ns"] for c in saver.list(None)}
    assert "" in namespaces
    assert any(ns.startswith("moa:") for ns in namespaces)
    final = graph.get_state(thread).values["messages"]
    assert [m.type for m in final] == ["human", "ai", "tool", "ai"]
    assert "391" in final[-1].content


def test_a_parent_with_another_state_shape_maps_through_a_wrapper_node(stub):
    graph = build_review_graph(_moa(stub)).compile()
    result = graph.invoke({"draft": "We will cache every response forever."})
    assert result["verdict"].startswith("[aggregator] Answer to")
    assert result["advisors"] == ["stub:analyst", "stub:skeptic", "stub:builder"]
    assert "messages" not in result


@pytest.mark.parametrize(
    ("question", "route"),
    [("Hi, who are you?", "single"), ("Compare two cache designs and their risks.", "moa")],
)
def test_the_router_example_sends_hard_questions_to_moa(stub, question, route):
    assert is_hard(question) == (route == "moa")
    single = ChatOpenAI(model="solo", base_url=stub.url, api_key="offline", max_retries=0)
    graph = build_router_graph(moa=_moa(stub), single=single).compile(checkpointer=InMemorySaver())
    result = graph.invoke(
        {"messages": [HumanMessage(question)]}, {"configurable": {"thread_id": route}}
    )
    stats = stub.stats()
    if route == "moa":
        assert stats == {"analyst": 1, "skeptic": 1, "builder": 1, "aggregator": 1}
        assert "weighing 3 reference answers" in result["messages"][-1].content
    else:
        assert stats == {"solo": 1}
        assert result["messages"][-1].content.startswith("[solo]")

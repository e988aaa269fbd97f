"""A router graph: hard questions go to the MoA subgraph, easy ones to a single model.

The MoA graph shares the parent's `messages` key, so it is added as a node as it is and the
parent's checkpointer covers it too. Run offline with `python -m moa_graph.examples.router`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from moa_graph.trimming import last_human_index, message_text

__all__ = ["build_router_graph", "is_hard", "main"]

Route = Literal["moa", "single"]
_HARD_WORDS = re.compile(
    r"\b(why|compare|design|plan|prove|review|trade-?offs?|architecture|risks?|strategy)\b", re.I
)


def is_hard(question: str) -> bool:
    """A cheap heuristic: long questions, or ones asking for judgement, deserve a panel."""
    return len(question.split()) > 25 or bool(_HARD_WORDS.search(question))


def build_router_graph(
    *,
    moa: CompiledStateGraph[Any, Any, Any, Any],
    single: BaseChatModel,
    classify: Callable[[str], bool] = is_hard,
) -> StateGraph[MessagesState]:
    """Build (uncompiled) a parent graph routing each user turn to `moa` or to `single`.

    Args:
        moa: The compiled MoA graph, added as the `moa` subgraph node.
        single: The model that answers easy questions alone.
        classify: Returns True when a question is hard enough for the MoA panel.
    """

    def route(state: MessagesState) -> Route:
        messages: list[AnyMessage] = state["messages"]
        at = last_human_index(messages)
        question = message_text(messages[at]) if at is not None else ""
        return "moa" if classify(question) else "single"

    def answer_alone(state: MessagesState) -> dict[str, Any]:
        return {"messages": [single.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("moa", moa)
    builder.add_node("single", answer_alone)
    builder.add_conditional_edges(START, route, {"moa": "moa", "single": "single"})
    builder.add_edge("moa", END)
    builder.add_edge("single", END)
    return builder


def main() -> None:
    """Route two questions through the graph, offline on the stand-in server."""
    from langchain_openai import ChatOpenAI
    from langgraph.checkpoint.memory import InMemorySaver

    from moa_graph import build_moa_graph
    from moa_graph.testing import StubServer, offline_config, offline_stub_models
    from moa_graph.tools import calculator

    with StubServer(models=offline_stub_models()) as url:
        moa = build_moa_graph("demo", tools=[calculator], config=offline_config(url)).compile()
        single = ChatOpenAI(model="solo", base_url=url, api_key="offline")  # type: ignore[arg-type]
        graph = build_router_graph(moa=moa, single=single).compile(checkpointer=InMemorySaver())
        for thread, question in enumerate(
            ["Hi, what is your name?", "Compare two designs for a rate limiter and their risks."]
        ):
            config: RunnableConfig = {"configurable": {"thread_id": str(thread)}}
            request: Any = {"messages": [("user", question)]}
            result = graph.invoke(request, config)
            print(f"{question}\n  -> {message_text(result['messages'][-1])}")


if __name__ == "__main__":
    main()

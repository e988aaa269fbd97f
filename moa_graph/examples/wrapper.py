"""A parent graph with its own state shape, and the node that maps it into MoA and back.

The parent knows nothing of `messages`: it holds a draft and wants a verdict. The wrapper node
builds the MoA input from the draft and maps the answer (and which advisors answered) back.
Run offline with `python -m moa_graph.examples.wrapper`.
"""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from moa_graph.trimming import message_text

__all__ = ["ReviewState", "build_review_graph", "main"]


class ReviewState(TypedDict, total=False):
    """The parent's state: a draft in, a verdict and the advisors that answered out."""

    draft: str
    verdict: str
    advisors: list[str]


def build_review_graph(moa: CompiledStateGraph[Any, Any, Any, Any]) -> StateGraph[ReviewState]:
    """Build (uncompiled) a one-node parent graph whose node runs the MoA graph on a draft."""

    def review(state: ReviewState) -> dict[str, Any]:
        result = moa.invoke({"messages": [HumanMessage(f"Review this draft:\n\n{state['draft']}")]})
        answered = [ref["label"] for ref in result["references"] if ref["status"] == "ok"]
        return {"verdict": message_text(result["messages"][-1]), "advisors": answered}

    builder = StateGraph(ReviewState)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    builder.add_edge("review", END)
    return builder


def main() -> None:
    """Review a draft through the parent graph, offline on the stand-in server."""
    from moa_graph import build_moa_graph
    from moa_graph.testing import StubServer, offline_config, offline_stub_models

    draft = "Cache every user's profile for a day; nobody changes theirs twice in a day."
    with StubServer(models=offline_stub_models()) as url:
        moa = build_moa_graph("demo", config=offline_config(url)).compile()
        result = build_review_graph(moa).compile().invoke({"draft": draft})
    print(f"draft:    {draft}")
    print(f"verdict:  {result['verdict']}")
    print(f"advisors: {', '.join(result['advisors'])}")


if __name__ == "__main__":
    main()

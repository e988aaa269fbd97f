"""One MoA turn, three front-ends: the graph, `MoAChatModel` in `create_agent`, `MoAMiddleware`.

The same conversations run through each against the stand-in; what the references, the
judge, the gate and the acting model receive (the request bodies the stand-in recorded), the
custom events and the tokens counted must be the same. Where they may differ, by design, is
named here:

- Under the middleware the acting model is the agent's own `ChatOpenAI`, which names itself
  `openai:boss` (its LangSmith provider) where the preset's aggregator entry says
  `stub:boss`: the guidance's header and the events carry that label.
- The graph names its replies after its agent (`name="moa"`), as `create_agent(name=...)`
  does: both agents here are given that name.
- A chat model keeps no graph state: its `usage` is each reply's `usage_metadata` (the call's
  total, references included when the call ran them), so only token totals are compared.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import MoAChatModel, MoAMiddleware, build_moa_graph
from moa_graph.testing import StubServer
from moa_graph.tools import calculator
from tests.fakes import stub_config

FRONT_ENDS = ("graph", "chat_model", "middleware")
REFERENCES = ("alpha", "beta")
MIDWAY = [
    HumanMessage("Look up 6 * 7 and explain it."),
    AIMessage(
        "Let me check with the calculator first.",
        tool_calls=[{"name": "calculator", "args": {"expression": "6 * 7"}, "id": "c1"}],
    ),
    ToolMessage("42", tool_call_id="c1"),
]


def _config(url: str, **preset: Any) -> dict[str, Any]:
    return stub_config(url, refs=REFERENCES, preset="review", **preset)


def _calc(expression: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}]}


@dataclass
class Seen:
    """What one front-end's run sent and reported."""

    references: dict[str, list[dict[str, Any]]]
    acting: list[dict[str, Any]]
    stage_models: dict[str, list[dict[str, Any]]]
    """What the judge and the gate were sent."""
    events: list[Any]
    """The custom events: the aggregator steps in order; the references' as a multiset."""
    tokens: int
    """Input plus output tokens of the last turn, every model."""
    calls: Counter[str]


def _run(front_end: str, stub: StubServer, turns: list[list[BaseMessage]], **preset: Any) -> Seen:
    config = _config(stub.url, **preset)
    agent: Any
    if front_end == "graph":
        graph = build_moa_graph("review", tools=[calculator], config=config)
        agent = graph.compile(checkpointer=InMemorySaver())
    elif front_end == "chat_model":
        model = MoAChatModel(preset="review", config=config)
        agent = create_agent(model, tools=[calculator], checkpointer=InMemorySaver(), name="moa")
    else:
        model = ChatOpenAI(base_url=stub.url, api_key="any", model="boss", max_retries=0)
        moa = MoAMiddleware(preset="review", config=config)
        agent = create_agent(
            model, tools=[calculator], middleware=[moa], checkpointer=InMemorySaver(), name="moa"
        )
    thread = {"configurable": {"thread_id": front_end}}
    events: list[dict[str, Any]] = []
    for turn in turns:
        stub.reset()  # the last turn is compared
        events = []
        before = len(agent.get_state(thread).values.get("messages", []))
        for mode, chunk in agent.stream(
            {"messages": turn}, thread, stream_mode=["custom", "values"]
        ):
            if mode == "custom":
                events.append(chunk)
        values = agent.get_state(thread).values
    steps = [e for e in events if e["type"] == "moa_aggregator"]
    stages = [
        {k: v for k, v in e.items() if k != "latency_ms"}
        for e in events
        if e["type"] in ("moa_gate", "moa_judge")
    ]
    references = Counter(
        json.dumps({k: v for k, v in e.items() if k != "latency_ms"}, sort_keys=True)
        for e in events
        if e["type"] == "moa_reference"
    )
    if front_end == "chat_model":
        replies = [m for m in values["messages"][before:] if isinstance(m, AIMessage)]
        tokens = sum((m.usage_metadata or {}).get("total_tokens", 0) for m in replies)
    else:
        total = values["usage"]["total"]
        tokens = total["input_tokens"] + total["output_tokens"]
    acting = [_comparable(body) for body in stub.requests("boss")]
    return Seen(
        references={name: stub.requests(name) for name in REFERENCES},
        acting=acting,
        stage_models={name: stub.requests(name) for name in ("referee", "doorman")},
        events=[[{**e, "label": "stub:boss"} for e in steps], references, stages],
        tokens=tokens,
        calls=Counter(stub.stats()),
    )


def _comparable(body: dict[str, Any]) -> Any:
    """A request body with the stand-in's tool-call ids numbered in order and one label."""
    text = json.dumps(body).replace("openai:boss", "stub:boss")
    ids: dict[str, str] = {}
    text = re.sub(r"call_[0-9a-f]+", lambda m: ids.setdefault(m[0], f"call_{len(ids)}"), text)
    return json.loads(text)


SCENARIOS = {
    "first-turn": ([[HumanMessage("What is 17 * 23?")]], {}, {}),
    "second-turn-after-a-tool-exchange": (
        [[HumanMessage("What is 17 * 23?")], [HumanMessage("And what is 2 + 2?")]],
        {},
        {},
    ),
    "picked-up-mid-way": ([MIDWAY], {}, {}),
    "two-layers": ([[HumanMessage("What is 17 * 23?")]], {"layers": 2}, {}),
    "every-n-2-over-a-tool-loop": (
        [[HumanMessage("What is 17 * 23?")]],
        {"fanout": "every_n:2"},
        {"boss": {"script": [_calc("1 + 1"), _calc("2 + 2"), _calc("3 + 3"), "Done."]}},
    ),
    "every-n-2-picked-up-mid-way": (
        [MIDWAY],
        {"fanout": "every_n:2"},
        {"boss": {"script": [_calc("1 + 1"), _calc("2 + 2"), "Done."]}},
    ),
    "with-a-judge": (
        [[HumanMessage("What is 17 * 23?")]],
        {"judge": {"model": {"provider": "stub", "model": "referee", "max_retries": 0}}},
        {
            "referee": {
                "reply": json.dumps(
                    {"ranking": [2, 1], "consensus": ["391"], "contradictions": [], "missed": []}
                )
            }
        },
    ),
    "a-gate-that-skips": (
        [[HumanMessage("Thanks, that is all.")]],
        {"gate": {"model": {"provider": "stub", "model": "doorman", "max_retries": 0}}},
        {"doorman": {"reply": "SKIP"}},
    ),
    "a-failing-reference": (
        [[HumanMessage("What is 17 * 23?")]],
        {},
        {"beta": {"fault": {"kind": "status", "status": 500}}},
    ),
    "a-disabled-preset": ([[HumanMessage("What is 17 * 23?")]], {"enabled": False}, {}),
}


ALPHA_CALLS = {
    "first-turn": 1,
    "second-turn-after-a-tool-exchange": 1,
    "picked-up-mid-way": 1,
    "two-layers": 2,
    "every-n-2-over-a-tool-loop": 2,
    "every-n-2-picked-up-mid-way": 2,
    "with-a-judge": 1,
    "a-gate-that-skips": 0,
    "a-failing-reference": 1,
    "a-disabled-preset": 0,
}
"""How often the first reference is asked in the compared turn (each layer, each re-run)."""


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_front_end_sends_and_reports_the_same_turn(stub, scenario):
    turns, preset, behaviour = SCENARIOS[scenario]
    seen = {}
    for front_end in FRONT_ENDS:
        stub.configure(behaviour, replace=True)
        seen[front_end] = _run(front_end, stub, turns, **preset)

    graph = seen["graph"]
    assert graph.acting, "the acting model was called"
    assert graph.calls["alpha"] == ALPHA_CALLS[scenario]
    for front_end in ("chat_model", "middleware"):
        other = seen[front_end]
        assert other.references == graph.references, f"{front_end}: what the references got"
        assert other.acting == graph.acting, f"{front_end}: what the acting model got"
        assert other.stage_models == graph.stage_models, f"{front_end}: the judge and gate"
        assert other.events == graph.events, f"{front_end}: the custom events"
        assert other.calls == graph.calls, f"{front_end}: the calls made"
        assert other.tokens == graph.tokens, f"{front_end}: the tokens counted"

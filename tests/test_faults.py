"""The fault matrix through the stand-in over real HTTP: references are isolated, the
aggregator is retried by its client and then fails typed, resumable and without the key.
"""

import asyncio
import time
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import MoAAggregatorError, build_moa_graph

SECRET = "sk-fault-matrix-SENTINEL-4242"
QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}
FAULTS = {
    "429": {"kind": "status", "status": 429, "retry_after": 0.1},
    "500": {"kind": "status", "status": 500},
    "503": {"kind": "status", "status": 503},
    "reset": {"kind": "reset"},
    "read timeout": {"kind": "hang", "hang_s": 30},
    "malformed json": {"kind": "malformed"},
    "no choices": {"kind": "no_choices"},
    "bad tool args": {"kind": "bad_tool_args"},
}


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("MOA_FAULT_KEY", SECRET)


def _config(url: str, *, reference_retries: int = 0, aggregator_timeout: float = 0.5) -> dict:
    def ref(model: str) -> dict:
        return {
            "provider": "stub",
            "model": model,
            "timeout": 0.5,
            "max_retries": reference_retries,
        }

    return {
        "moa": {
            "providers": {"stub": {"base_url": url, "api_key_env": "MOA_FAULT_KEY"}},
            "presets": {
                "demo": {
                    "reference_models": [ref("alpha"), ref("beta")],
                    "aggregator": {
                        "provider": "stub",
                        "model": "boss",
                        "timeout": aggregator_timeout,
                    },
                }
            },
        }
    }


def _run(graph: Any, mode: str, turn: Any, config: Any = None) -> Any:
    """`invoke` (the OpenAI client's sync httpx transport) or `ainvoke` (our aiohttp one)."""
    if mode == "invoke":
        return graph.invoke(turn, config)
    return asyncio.run(graph.ainvoke(turn, config))


MODES = pytest.mark.parametrize("mode", ["invoke", "ainvoke"])


@MODES
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_faulty_reference_is_isolated_with_a_readable_reason(stub, fault, mode):
    stub.configure({"alpha": {"fault": FAULTS[fault]}})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    started = time.monotonic()
    out = _run(graph, mode, QUESTION)

    alpha, beta = out["references"]
    assert alpha["status"] == "failed", alpha
    assert alpha["text"].startswith("[failed: ") and "\n" not in alpha["text"]
    assert alpha["error_type"]
    assert SECRET not in alpha["text"]
    if fault == "reset":  # aiohttp's transport calls it a timeout: the cause is named too
        assert "Server disconnected" in alpha["text"], alpha["text"]
    assert beta["status"] == "ok"
    assert "weighing 1 reference answers" in out["messages"][-1].content
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("fault", "requests"),
    [
        ("429", 3),
        ("500", 3),
        ("503", 3),
        ("reset", 3),
        ("read timeout", 3),
        ("malformed json", 1),
        ("no choices", 1),
        ("bad tool args", 1),
    ],
)
@MODES
def test_a_faulty_aggregator_is_retried_then_fails_typed_and_resumable(stub, fault, requests, mode):
    stub.configure({"boss": {"fault": FAULTS[fault]}})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": fault}}

    with pytest.raises(MoAAggregatorError) as info:
        _run(graph, mode, QUESTION, thread)
    message = str(info.value)
    assert message.startswith("aggregator stub:boss failed: ")
    assert SECRET not in message
    assert stub.stats()["boss"] == requests  # the client's own retries, no more

    # The turn is resumable: the references' answers are checkpointed, the aggregator is next.
    state = graph.get_state(thread)
    assert state.next == ("aggregator",)
    stub.configure({"boss": {}})  # the provider recovers
    out = _run(graph, mode, None, thread)
    assert "391" in out["messages"][-1].content or out["messages"][-1].tool_calls
    assert stub.stats()["alpha"] == 1 and stub.stats()["beta"] == 1


@MODES
def test_retry_after_is_honoured(stub, mode):
    stub.configure(
        {"boss": {"fault": {"kind": "status", "status": 429, "retry_after": 1.0, "times": 2}}}
    )
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    started = time.monotonic()
    out = _run(graph, mode, QUESTION)
    elapsed = time.monotonic() - started
    assert out["messages"][-1].tool_calls or "391" in out["messages"][-1].content
    assert stub.stats()["boss"] >= 3
    assert elapsed >= 1.9, f"two Retry-After: 1 waits should take 2 s, took {elapsed:.2f}s"


async def test_a_stream_cut_midway_fails_the_aggregator_typed(stub):
    stub.configure({"boss": {"fault": {"kind": "cut_stream"}}})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    with pytest.raises(MoAAggregatorError, match="stub:boss"):
        async for _ in graph.astream(QUESTION, stream_mode="messages"):
            pass


async def test_cancelling_a_turn_cancels_in_flight_references(stub):
    stub.configure({"alpha": {"latency": 10}, "beta": {"latency": 10}})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    before = asyncio.all_tasks()
    task = asyncio.create_task(graph.ainvoke(QUESTION))
    deadline = time.monotonic() + 5
    while sum(stub.stats().values()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    while stub.disconnects() != {"alpha": 1, "beta": 1} and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert stub.disconnects() == {"alpha": 1, "beta": 1}
    await asyncio.sleep(0.05)
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()

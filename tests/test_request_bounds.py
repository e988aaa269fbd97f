"""A model's `timeout` bounds each request in total, whatever the server does.

A server trickling its response one byte at a time, or streaming chunks that never end,
answers every read in time: only a bound on the whole request ends it. Each case runs
against such a server, on every path a request takes: a reference asked directly (sync and
async), a reference through `ChatOpenAI` (a handler is watching), the aggregator (`invoke`,
`ainvoke`, `astream`) and `MoAChatModel`. Each call runs once against a healthy server
first, so that the timed run measures the request, not imports, clients or connections.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage

from moa_graph import MoAAggregatorError, MoAChatModel, build_moa_graph, direct

TIMEOUT = 1.0
"""Every model's `timeout` here; each fault gives a read something well within it."""
SLACK = 1.5
"""Room for the healthy calls of the turn and for scheduling on a busy machine."""
SLOW = {
    "trickle": {"kind": "trickle", "interval_s": 0.25},
    "endless_stream": {"kind": "endless_stream", "interval_s": 0.2},
}
FAULTS = pytest.mark.parametrize("fault", sorted(SLOW))
QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}


def _config(url: str, *, retries: int = 0) -> dict[str, Any]:
    def model(name: str) -> dict[str, Any]:
        return {"provider": "stub", "model": name, "timeout": TIMEOUT, "max_retries": retries}

    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {
                "demo": {
                    "reference_models": [model("alpha"), model("beta")],
                    "aggregator": model("boss"),
                }
            },
        }
    }


def _ends_within(limit: float, call: Callable[[], Any]) -> Any:
    """`call()` (in a thread), which must end within `limit` seconds; its result or error."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"still running after {limit:.1f} s"
    outcome["elapsed"] = time.monotonic() - started
    return outcome


def _warm_up(stub: Any, call: Callable[[], Any], *seen: list[str]) -> None:
    """Run `call()` once while the server is healthy, then forget it (stats and `seen`)."""
    call()
    stub.reset()
    for calls in seen:
        calls.clear()


def _graph(url: str, **options: Any) -> Any:
    return build_moa_graph("demo", config=_config(url, **options)).compile()


def _alpha_timed_out(out: dict[str, Any]) -> None:
    alpha, beta = out["result"]["references"]
    assert alpha["status"] == "failed", alpha
    # `openai.APITimeoutError`, or langchain-openai's subclass of it through `ChatOpenAI`.
    assert alpha["error_type"].endswith("TimeoutError"), alpha
    assert "timed out" in alpha["text"], alpha["text"]
    assert beta["status"] == "ok"


class _Watching(BaseCallbackHandler):
    """A handler: references go through `ChatOpenAI` while one is watching."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_chat_model_start(self, serialized, messages, *, name=None, **kwargs):
        self.started.append(name)


@pytest.fixture
def direct_calls(monkeypatch) -> list[str]:
    """Models asked through `moa_graph.direct`, sync or async (the call goes through)."""
    seen: list[str] = []
    post, apost = direct.post, direct.apost

    def spy(client, spec, messages, **options):
        seen.append(spec.model)
        return post(client, spec, messages, **options)

    async def aspy(client, spec, messages, **options):
        seen.append(spec.model)
        return await apost(client, spec, messages, **options)

    monkeypatch.setattr(direct, "post", spy)
    monkeypatch.setattr(direct, "apost", aspy)
    return seen


# --- references ----------------------------------------------------------------------------


@FAULTS
def test_a_direct_reference_ends_within_its_timeout_under_invoke(stub, fault, direct_calls):
    graph = _graph(stub.url)
    _warm_up(stub, lambda: graph.invoke(QUESTION), direct_calls)
    stub.configure({"alpha": {"fault": SLOW[fault]}})
    out = _ends_within(TIMEOUT + SLACK + 5, lambda: graph.invoke(QUESTION))
    _alpha_timed_out(out)
    assert out["elapsed"] < TIMEOUT + SLACK
    assert "alpha" in direct_calls


@FAULTS
def test_a_direct_reference_ends_within_its_timeout_under_ainvoke(stub, fault, direct_calls):
    graph = _graph(stub.url)

    def call():
        return asyncio.run(graph.ainvoke(QUESTION))

    _warm_up(stub, call, direct_calls)
    stub.configure({"alpha": {"fault": SLOW[fault]}})
    out = _ends_within(TIMEOUT + SLACK + 5, call)
    _alpha_timed_out(out)
    assert out["elapsed"] < TIMEOUT + SLACK
    assert "alpha" in direct_calls


@FAULTS
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_reference_through_chatopenai_ends_within_its_timeout(stub, fault, mode, direct_calls):
    graph, watching = _graph(stub.url), _Watching()
    config = {"callbacks": [watching]}
    call = {
        "invoke": lambda: graph.invoke(QUESTION, config),
        "ainvoke": lambda: asyncio.run(graph.ainvoke(QUESTION, config)),
    }[mode]
    _warm_up(stub, call, direct_calls, watching.started)
    stub.configure({"alpha": {"fault": SLOW[fault]}})
    out = _ends_within(TIMEOUT + SLACK + 5, call)
    _alpha_timed_out(out)
    assert out["elapsed"] < TIMEOUT + SLACK
    assert direct_calls == [] and "moa_reference:stub:alpha" in watching.started


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_each_retry_of_a_reference_has_a_bound_of_its_own(stub, mode):
    graph = _graph(stub.url, retries=1)
    run = graph.invoke if mode == "invoke" else lambda q: asyncio.run(graph.ainvoke(q))
    _warm_up(stub, lambda: run(QUESTION))
    stub.configure({"alpha": {"fault": SLOW["trickle"]}})
    out = _ends_within(2 * TIMEOUT + SLACK + 5, lambda: run(QUESTION))
    _alpha_timed_out(out)
    assert stub.stats()["alpha"] == 2  # the client's own retry, after a timeout
    assert out["elapsed"] < 2 * TIMEOUT + 1.0 + SLACK  # + the client's backoff (< 1 s)


# --- the aggregator ------------------------------------------------------------------------


async def _stream_messages(graph: Any) -> None:
    async for _ in graph.astream(QUESTION, stream_mode="messages"):
        pass


@FAULTS
@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "astream"])
def test_the_aggregator_ends_within_its_timeout(stub, fault, mode):
    graph = _graph(stub.url)
    call = {
        "invoke": lambda: graph.invoke(QUESTION),
        "ainvoke": lambda: asyncio.run(graph.ainvoke(QUESTION)),
        "astream": lambda: asyncio.run(_stream_messages(graph)),
    }[mode]
    _warm_up(stub, call)
    stub.configure({"boss": {"fault": SLOW[fault]}})
    out = _ends_within(TIMEOUT + SLACK + 5, call)
    assert isinstance(out.get("error"), MoAAggregatorError), out
    assert "timed out" in str(out["error"])
    assert out["elapsed"] < TIMEOUT + SLACK
    assert stub.stats()["boss"] == 1


def test_each_retry_of_the_aggregator_has_a_bound_of_its_own(stub):
    graph = _graph(stub.url, retries=1)

    def call():
        return asyncio.run(_stream_messages(graph))

    _warm_up(stub, call)
    stub.configure({"boss": {"fault": SLOW["endless_stream"]}})
    out = _ends_within(2 * TIMEOUT + SLACK + 5, call)
    assert isinstance(out.get("error"), MoAAggregatorError), out
    # A stream cut mid-way is not retried by the client; a cut before the headers would be.
    assert stub.stats()["boss"] in (1, 2)
    assert out["elapsed"] < 2 * TIMEOUT + 1.0 + SLACK


# --- MoAChatModel --------------------------------------------------------------------------


@FAULTS
def test_moa_chat_model_references_end_within_their_timeout(stub, fault):
    moa = MoAChatModel(preset="demo", config=_config(stub.url))
    # Another question: the references of this one would be cached for the turn.
    _warm_up(stub, lambda: moa.invoke("What is 2 + 2?"))
    stub.configure({"alpha": {"fault": SLOW[fault]}})
    out = _ends_within(TIMEOUT + SLACK + 5, lambda: moa.invoke("What is 17 * 23?"))
    assert "error" not in out, out
    statuses = [ref["status"] for ref in out["result"].response_metadata["moa_references"]]
    assert statuses == ["failed", "ok"]
    assert out["elapsed"] < TIMEOUT + SLACK


@FAULTS
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_moa_chat_model_aggregator_ends_within_its_timeout(stub, fault, mode):
    moa = MoAChatModel(preset="demo", config=_config(stub.url))
    ask = moa.invoke if mode == "invoke" else lambda q: asyncio.run(moa.ainvoke(q))
    _warm_up(stub, lambda: ask("What is 2 + 2?"))  # not this turn: its advice is cached
    stub.configure({"boss": {"fault": SLOW[fault]}})
    out = _ends_within(TIMEOUT + SLACK + 5, lambda: ask("What is 17 * 23?"))
    assert isinstance(out.get("error"), MoAAggregatorError), out
    assert out["elapsed"] < TIMEOUT + SLACK

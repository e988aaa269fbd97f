"""The lean reference call (`moa_graph.direct`) against the stand-in over real HTTP: the same
request and answer as `ChatOpenAI`, used only when no callback handler is watching, and a
deadline that keeps answers already on the wire when the event loop is busy."""

import asyncio
import time

import pytest
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from moa_graph import ModelSpec, ProviderSpec, build_moa_graph
from moa_graph.direct import apost, is_observed, post
from moa_graph.providers import default_model_factory

VIEW = [
    SystemMessage("Advise briefly."),
    HumanMessage("hi", name="bob"),
    AIMessage("hello", name="moa"),
    HumanMessage(
        [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
    ),
]
QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}


def _model(url: str, **spec: object):
    spec = ModelSpec(provider="stub", model="alpha", **spec)
    factory = default_model_factory({"stub": ProviderSpec(base_url=url)})
    return spec, factory(spec)


def test_the_request_is_the_one_chatopenai_sends(stub):
    spec, model = _model(stub.url, temperature=0.3, max_tokens=50)
    via_langchain = model.invoke(VIEW)
    direct = post(model.root_client, spec, VIEW)

    sent_by_langchain, sent_direct = stub.requests("alpha")
    assert sent_direct == sent_by_langchain
    assert direct.content == via_langchain.content
    assert direct.usage_metadata == via_langchain.usage_metadata


async def test_the_async_call_answers_with_text_and_usage(stub):
    spec, model = _model(stub.url)
    reply = await apost(model.root_async_client, spec, [HumanMessage("What is 17 * 23?")])
    assert "391" in reply.content
    assert reply.usage_metadata["input_tokens"] > 0
    assert reply.usage_metadata["output_tokens"] > 0
    assert not reply.tool_calls and not reply.invalid_tool_calls


def test_a_tool_call_reply_is_kept_for_the_protocol_check(stub):
    stub.configure({"alpha": {"fault": {"kind": "bad_tool_args"}}})
    spec, model = _model(stub.url)
    reply = post(model.root_client, spec, [HumanMessage("What is 17 * 23?")])
    assert reply.invalid_tool_calls and reply.invalid_tool_calls[0]["name"]


def test_a_time_budget_is_one_attempt(stub):
    stub.configure({"alpha": {"latency": 5}})
    spec, model = _model(stub.url, max_retries=2)
    started = time.monotonic()
    with pytest.raises(Exception, match="timed out"):
        post(model.root_client, spec, [HumanMessage("hi")], timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert stub.stats() == {"alpha": 1}


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_chat_model_start(self, serialized, messages, *, name=None, **kwargs):
        self.names.append(name)


def test_nothing_is_observed_without_handlers_and_tracing(monkeypatch):
    monkeypatch.delenv("LANGSMITH_TRACING", raising=False)
    monkeypatch.delenv("LANGCHAIN_TRACING_V2", raising=False)
    assert not is_observed()
    assert is_observed([_Recorder()])
    with get_usage_metadata_callback():
        assert is_observed()


def test_a_watching_handler_still_sees_every_reference_run(stub):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    recorder = _Recorder()
    out = graph.invoke(QUESTION, {"callbacks": [recorder]})
    assert [r["status"] for r in out["references"]] == ["ok", "ok"]
    assert sorted(n for n in recorder.names if n.startswith("moa_reference:")) == [
        "moa_reference:stub:alpha",
        "moa_reference:stub:beta",
    ]


async def test_usage_callbacks_count_the_references(stub):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    with get_usage_metadata_callback() as usage:
        await graph.ainvoke(QUESTION)
    assert usage.usage_metadata["alpha"]["input_tokens"] > 0
    assert usage.usage_metadata["beta"]["input_tokens"] > 0


async def test_under_load_the_deadline_keeps_answers_that_arrived_in_time(stub):
    # Ten turns at once on one event loop, 8 references each, one a 10 s straggler, 1 s
    # deadline: the loop is busy, but a healthy answer (200 ms) is on the socket long before
    # the deadline and must be kept; the straggler alone is cut.
    refs = [f"r{i}" for i in range(7)]
    stub.configure({name: {"latency": 0.2} for name in refs} | {"slow": {"latency": 10}})
    config = _config(stub.url, refs=(*refs, "slow"), references_deadline_s=1.0)
    graph = build_moa_graph("demo", config=config).compile()

    started = time.monotonic()
    outs = await asyncio.gather(*(graph.ainvoke(QUESTION) for _ in range(10)))
    elapsed = time.monotonic() - started

    for out in outs:
        statuses = {r["label"]: r["status"] for r in out["references"]}
        assert statuses == {f"stub:{name}": "ok" for name in refs} | {"stub:slow": "failed"}
    assert elapsed < 8, elapsed  # the stragglers were cut, not awaited


def _config(url: str, *, refs=("alpha", "beta"), **preset: object) -> dict:
    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {
                "demo": {
                    "reference_models": [{"provider": "stub", "model": m} for m in refs],
                    "aggregator": {"provider": "stub", "model": "boss"},
                    **preset,
                }
            },
        }
    }

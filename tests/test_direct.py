"""The lean reference call (`moa_graph.direct`) against the stand-in over real HTTP: the same
request and answer as `ChatOpenAI`, used only when no callback handler is watching, and a
deadline that keeps answers already on the wire when the event loop is busy."""

import asyncio
import time

import pytest
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from moa_graph import MoAChatModel, ModelSpec, ProviderSpec, build_moa_graph, direct
from moa_graph.direct import apost, is_observed, post, speaks_plain_chat
from moa_graph.prompts import GUIDANCE_TITLE
from moa_graph.providers import default_model_factory
from tests.fakes import FakeChatModel

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


def test_a_request_gets_the_timeout_and_retries_it_is_given(stub):
    stub.configure({"alpha": {"latency": 5}})
    spec, model = _model(stub.url, max_retries=2)
    started = time.monotonic()
    with pytest.raises(Exception, match="timed out"):
        post(model.root_client, spec, [HumanMessage("hi")], timeout=0.3, max_retries=0)
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


@pytest.fixture
def direct_calls(monkeypatch) -> list[str]:
    """Models asked through `moa_graph.direct` (a spy: the call goes through unchanged)."""
    seen: list[str] = []
    real = direct.apost

    async def spy(client, spec, messages, **options):
        seen.append(spec.model)
        return await real(client, spec, messages, **options)

    monkeypatch.setattr(direct, "apost", spy)
    return seen


async def test_references_are_asked_directly_unless_a_handler_watches(stub, direct_calls):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    await graph.ainvoke(QUESTION)
    assert sorted(direct_calls) == ["alpha", "beta"]

    direct_calls.clear()
    recorder = _Recorder()
    out = await graph.ainvoke(QUESTION, {"callbacks": [recorder]})
    assert direct_calls == []
    assert [r["status"] for r in out["references"]] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("model", "settings", "plain"),
    [
        ("alpha", {"temperature": 0.3, "max_tokens": 50}, True),
        ("gpt-4.1", {"temperature": 0.2}, True),
        ("gpt-5.5", {"temperature": 0.7}, False),  # ChatOpenAI drops the temperature
        ("o3", {}, False),  # ChatOpenAI sends the system prompt as `developer`
        ("gpt-5.5-pro", {}, False),  # ChatOpenAI uses the Responses API
    ],
)
def test_models_chatopenai_adapts_requests_for_stay_on_chatopenai(model, settings, plain):
    spec = ModelSpec(provider="stub", model=model, **settings)
    chat = default_model_factory({"stub": ProviderSpec(base_url="http://127.0.0.1:9/v1")})(spec)
    assert speaks_plain_chat(chat, spec) is plain


async def test_an_adapted_model_is_asked_through_chatopenai(stub, direct_calls):
    graph = build_moa_graph("demo", config=_config(stub.url, refs=("alpha", "o3"))).compile()
    out = await graph.ainvoke(QUESTION)
    assert [r["status"] for r in out["references"]] == ["ok", "ok"]
    assert direct_calls == ["alpha"]
    assert stub.requests("o3")[0]["messages"][0]["role"] == "developer"
    assert stub.requests("alpha")[0]["messages"][0]["role"] == "system"


async def test_a_models_own_shorter_timeout_is_its_own_failure_not_the_slot_limit(stub):
    stub.configure({"beta": {"latency": 3}})
    beta = {"provider": "stub", "model": "beta", "timeout": 0.3, "max_retries": 0}
    config = _config(stub.url)
    config["moa"]["presets"]["demo"]["reference_models"][1] = beta | {"reference_timeout_s": 30}
    started = time.monotonic()
    out = await build_moa_graph("demo", config=config).compile().ainvoke(QUESTION)
    beta_answer = out["references"][1]
    assert beta_answer["status"] == "failed"
    assert "Request timed out" in beta_answer["text"], beta_answer["text"]
    assert "30" not in beta_answer["text"]
    assert time.monotonic() - started < 2.5


async def test_a_timeout_error_from_a_model_without_a_limit_is_reported_as_it_is():
    def factory(spec):
        if spec.model == "beta":
            return FakeChatModel(script=[TimeoutError("upstream gateway timeout")])
        return FakeChatModel(label=spec.model)

    graph = build_moa_graph("demo", config=_config("http://127.0.0.1:9/v1"), model_factory=factory)
    out = await graph.compile().ainvoke(QUESTION)
    beta = out["references"][1]
    assert beta["status"] == "failed"
    assert beta["text"] == "[failed: TimeoutError: upstream gateway timeout]"
    assert beta["error_type"] == "TimeoutError"


def test_an_error_body_is_reported_with_the_providers_message():
    with pytest.raises(ValueError, match="overloaded"):
        direct._reply(b'{"error": {"message": "overloaded", "code": 529}}')
    with pytest.raises(KeyError):
        direct._reply(b'{"choices": [{"message": null}]}')


def test_advice_made_mid_bucket_is_placed_where_it_was_made(stub):
    # MoAChatModel asked first at step 2 of an every_n:2 run (no cached advice, say after a
    # restart): its references saw the tool result, so the guidance goes after it.
    config = _config(stub.url, fanout="every_n:2")
    conversation = [
        HumanMessage("What is 17 * 23?"),
        AIMessage(
            "", tool_calls=[{"name": "calculator", "args": {"expression": "17*23"}, "id": "c1"}]
        ),
        ToolMessage("391", tool_call_id="c1"),
    ]
    MoAChatModel(preset="demo", config=config).invoke(conversation)
    sent = stub.requests("boss")[0]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[-1]["content"].startswith(GUIDANCE_TITLE)


async def test_under_load_the_deadline_keeps_answers_that_arrived_in_time(stub, direct_calls):
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
    assert len(direct_calls) == 80  # the path under test: requests with their own timeout


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

"""`MoAChatModel`: the preset as a chat model, against fakes and the stand-in over HTTP."""

import asyncio
import tempfile
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel

from moa_graph import MoAAggregatorError, MoAChatModel, ModelSpec, Preset, init_moa_model
from moa_graph.prompts import GUIDANCE_TITLE
from moa_graph.tools import calculator
from tests.fakes import FakeChatModel, FakeModels, tool_call

_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="moa-chat-model-"))


def _preset(*refs: str, name: str = "test") -> Preset:
    return Preset(
        name=name,
        reference_models=[ModelSpec(provider="fake", model=r) for r in refs],
        aggregator=ModelSpec(provider="fake", model="agg"),
    )


def _stub_config(url: str) -> dict:
    def preset(*refs: str) -> dict:
        return {
            "reference_models": [{"provider": "stub", "model": r} for r in refs],
            "aggregator": {"provider": "stub", "model": "boss"},
        }

    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {"demo": preset("alpha", "beta"), "solo": preset("gamma")},
        }
    }


class TestMoAChatModelStandard(ChatModelUnitTests):
    """LangChain's standard unit suite for chat models."""

    @property
    def chat_model_class(self) -> type[MoAChatModel]:
        return MoAChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"preset": _preset("a", "b"), "model_factory": FakeModels()}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        # The environment's part for MoA is the config discovery: $MOA_GRAPH_CONFIG.
        path = _CONFIG_DIR / "moa.yaml"
        path.write_text(
            "moa:\n  default_preset: env\n  presets:\n    env:\n"
            "      reference_models: [{provider: openai, model: a}]\n"
            "      aggregator: {provider: openai, model: b}\n",
            encoding="utf-8",
        )
        return {"MOA_GRAPH_CONFIG": str(path)}, {}, {"preset_name": "env"}


def test_the_model_is_not_lc_serializable():
    # It holds a config and a model factory: LangChain records a placeholder, not the config.
    # (This is why the standard suite's test_serdes reports itself skipped.)
    model = MoAChatModel(preset=_preset("a"), model_factory=FakeModels())
    assert not MoAChatModel.is_lc_serializable()
    assert dumpd(model)["type"] == "not_implemented"


# -- behaviour with fakes ----------------------------------------------------------------------


def test_one_call_runs_references_then_the_aggregator_with_guidance():
    models = FakeModels()
    moa = MoAChatModel(preset=_preset("a", "b"), model_factory=models)
    reply = moa.invoke("question")

    assert reply.content == "agg answers"
    assert len(models["a"].calls) == 1 and len(models["b"].calls) == 1
    sent = models["agg"].calls[0].messages
    assert [m.type for m in sent] == ["human", "human"]
    assert sent[1].content.startswith(GUIDANCE_TITLE)
    assert [r["label"] for r in reply.response_metadata["moa_references"]] == ["fake:a", "fake:b"]


def test_tools_are_bound_to_the_aggregator_only():
    models = FakeModels(agg=FakeChatModel(script=[tool_call("calculator", {"expression": "1+1"})]))
    moa = MoAChatModel(preset=_preset("a"), model_factory=models)
    reply = moa.bind_tools([calculator]).invoke("what is 1+1?")

    assert reply.tool_calls[0]["name"] == "calculator"
    assert [t["function"]["name"] for t in models["agg"].calls[0].tools] == ["calculator"]
    assert models["a"].calls[0].tools == []


def test_references_run_once_per_user_turn_across_tool_steps():
    models = FakeModels()
    moa = MoAChatModel(preset=_preset("a"), model_factory=models)
    turn = [HumanMessage("q")]
    first = moa.invoke(turn)
    step = [
        *turn,
        tool_call("calculator", {"expression": "1"}),
        ToolMessage("1", tool_call_id="call_1"),
    ]
    second = moa.invoke(step)
    moa.invoke([*step, AIMessage("done"), HumanMessage("next question")])

    assert len(models["a"].calls) == 2
    assert first.response_metadata["moa_references_cached"] is False
    assert second.response_metadata["moa_references_cached"] is True


async def test_concurrent_calls_for_one_turn_share_one_reference_run():
    models = FakeModels(a=FakeChatModel(label="a", delay=0.3))
    moa = MoAChatModel(preset=_preset("a"), model_factory=models)
    replies = await asyncio.gather(*(moa.ainvoke("same question") for _ in range(5)))
    assert len(replies) == 5
    assert len(models["a"].calls) == 1


def test_the_reference_cache_is_bounded():
    models = FakeModels()
    moa = MoAChatModel(preset=_preset("a"), model_factory=models, reference_cache_size=2)
    for question in ["one", "two", "three", "one"]:
        moa.invoke(question)
    assert len(models["a"].calls) == 4  # "one" was evicted by "three"


def test_with_structured_output_goes_through_the_aggregator():
    class Answer(BaseModel):
        value: int

    models = FakeModels(agg=FakeChatModel(script=[tool_call("Answer", {"value": 4})]))
    moa = MoAChatModel(preset=_preset("a"), model_factory=models)
    assert moa.with_structured_output(Answer).invoke("2 + 2?") == Answer(value=4)
    assert [t["function"]["name"] for t in models["agg"].calls[0].tools] == ["Answer"]


def test_langsmith_params_name_the_preset():
    moa = MoAChatModel(preset=_preset("a"), model_factory=FakeModels(), temperature=0.2)
    params = moa._get_ls_params()
    assert params["ls_provider"] == "moa"
    assert params["ls_model_name"] == "test"
    assert params["ls_temperature"] == 0.2
    assert moa._llm_type == "moa"


def test_an_aggregator_failure_is_typed():
    models = FakeModels(agg=FakeChatModel(script=[RuntimeError("overloaded")]))
    moa = MoAChatModel(preset=_preset("a"), model_factory=models)
    with pytest.raises(MoAAggregatorError, match="fake:agg failed: RuntimeError: overloaded"):
        moa.invoke("q")


# -- over HTTP ----------------------------------------------------------------------------------


def test_init_moa_model_reads_like_init_chat_model(stub):
    moa = init_moa_model("moa:solo", config=_stub_config(stub.url))
    assert isinstance(moa, MoAChatModel) and moa.preset_name == "solo"
    assert init_moa_model(config=_stub_config(stub.url)).preset_name == "demo"


def test_standard_parameters_reach_the_aggregator_over_http(stub):
    moa = MoAChatModel(
        preset="demo",
        config=_stub_config(stub.url),
        temperature=0.3,
        max_tokens=50,
        stop=["END"],
    )
    moa.invoke("hello")
    (boss,) = stub.requests("boss")
    assert boss["temperature"] == 0.3
    assert boss["max_completion_tokens"] == 50
    assert boss["stop"] == ["END"]
    (alpha,) = stub.requests("alpha")
    assert "temperature" not in alpha and "stop" not in alpha


def test_a_per_call_model_runs_another_preset(stub):
    moa = MoAChatModel(preset="demo", config=_stub_config(stub.url))
    moa.invoke("hello", model="solo")
    assert stub.stats() == {"gamma": 1, "boss": 1}


async def test_astream_streams_the_aggregators_tokens(stub):
    moa = MoAChatModel(preset="demo", config=_stub_config(stub.url))
    chunks = [chunk async for chunk in moa.astream("tell me something")]
    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 3
    assert "".join(texts).startswith("[boss] Answer to")
    whole = sum(chunks[1:], chunks[0])
    assert whole.response_metadata["moa_preset"] == "demo"
    assert [c.chunk_position for c in chunks].count("last") == 1
    assert whole.usage_metadata["output_tokens"] > 0


def test_create_agent_completes_a_tool_round_trip_with_references_run_once(stub):
    moa = MoAChatModel(preset="demo", config=_stub_config(stub.url))
    agent = create_agent(moa, tools=[calculator])
    result = agent.invoke({"messages": [("user", "What is 17 * 23?")]})

    assert [m.type for m in result["messages"]] == ["human", "ai", "tool", "ai"]
    assert result["messages"][2].content == "391"
    assert "391" in result["messages"][-1].content
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 2}
    # The references never saw the tools; the aggregator did, on both steps.
    assert all("tools" not in r for r in stub.requests("alpha") + stub.requests("beta"))
    assert all(r["tools"][0]["function"]["name"] == "calculator" for r in stub.requests("boss"))


def test_batch_answers_each_input(stub):
    moa = MoAChatModel(preset="solo", config=_stub_config(stub.url))
    replies = moa.batch(["first", "second"])
    assert [r.content.split('"')[1] for r in replies] == ["first", "second"]
    assert stub.stats() == {"gamma": 2, "boss": 2}

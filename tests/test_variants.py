"""The MoA variants, each shown through the stand-in over HTTP: fan-out schedules, layers,
Self-MoA samples, straggler deadlines, thin advice, the degraded policy, the privacy filter.
"""

import asyncio
import itertools
import json
import re
import time

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from moa_graph import ConfigError, MoAChatModel, build_moa_graph, load_config
from moa_graph.prompts import ADVICE_PREDATES, GUIDANCE_TITLE
from moa_graph.providers import default_model_factory
from moa_graph.tools import calculator
from tests.fakes import tool_call

ARITHMETIC = {"messages": [HumanMessage("What is 17 * 23?")]}
EMAIL = "ada.lovelace@example.org"


def _config(url: str, refs=("alpha", "beta"), **preset) -> dict:
    models = [r if isinstance(r, dict) else {"model": r} for r in refs]
    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {
                "demo": {
                    "reference_models": [{"provider": "stub", **m} for m in models],
                    "aggregator": {"provider": "stub", "model": "boss"},
                    **preset,
                }
            },
        }
    }


def _graph(stub, refs=("alpha", "beta"), **preset):
    config = _config(stub.url, refs, **preset)
    return build_moa_graph("demo", tools=[calculator], config=config).compile()


def _guidance(request: dict) -> str:
    (text,) = [
        m["content"]
        for m in request["messages"]
        if m["role"] == "user" and str(m["content"]).startswith(GUIDANCE_TITLE)
    ]
    return text


# -- defaults ------------------------------------------------------------------------------------


def test_the_defaults_reproduce_the_core_behaviour(stub):
    preset = load_config(_config(stub.url)).preset()
    assert (preset.fanout, preset.layers, preset.min_references) == ("per_turn", 1, 1)
    assert preset.degraded_reference_policy == "loud" and preset.privacy_filter == "off"
    assert preset.references_deadline_s is None and preset.reference_tool_result_budget == 4000

    out = _graph(stub).invoke(ARITHMETIC)
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 2}
    assert [r["label"] for r in out["references"]] == ["stub:alpha", "stub:beta"]
    first, second = stub.requests("boss")
    assert second["messages"][: len(first["messages"])] == first["messages"]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("fanout", "sometimes", "moa.presets.demo.fanout: 'sometimes' is not a schedule"),
        ("fanout", "every_n:0", "moa.presets.demo.fanout: 'every_n:0' is not a schedule"),
        ("layers", 0, "moa.presets.demo.layers: Input should be greater than or equal to 1"),
        ("references_deadline_s", -1, "moa.presets.demo.references_deadline_s: Input should be"),
        ("min_references", -2, "moa.presets.demo.min_references: Input should be greater"),
        ("degraded_reference_policy", "quiet", "moa.presets.demo.degraded_reference_policy:"),
        ("privacy_filter", "on", "moa.presets.demo.privacy_filter: Input should be"),
        ("reference_tool_result_budget", 5, "moa.presets.demo.reference_tool_result_budget:"),
    ],
)
def test_bad_values_are_config_errors_with_their_key_path(stub, key, value, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_config(stub.url, **{key: value}))
    assert str(info.value).startswith(expected)


def test_bad_slot_values_are_config_errors_with_their_key_path(stub):
    with pytest.raises(ConfigError, match=r"reference_models\[1\]\.samples: Input should be"):
        load_config(_config(stub.url, refs=("alpha", {"model": "beta", "samples": 0})))
    with pytest.raises(ConfigError, match=r"reference_models\[0\]\.reference_timeout_s"):
        load_config(_config(stub.url, refs=({"model": "alpha", "reference_timeout_s": 0},)))


# -- fan-out schedule ----------------------------------------------------------------------------


def test_every_step_doubles_reference_calls_over_a_two_step_tool_loop(stub):
    out = _graph(stub, fanout="every_step").invoke(ARITHMETIC)
    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 2}
    assert "391" in out["messages"][-1].content
    # The re-run saw the tool activity: the call line and the result preview.
    rerun = stub.requests("alpha")[1]["messages"]
    assert any("[called tool: calculator(" in m["content"] for m in rerun)
    assert any(m["content"] == "[tool result calculator]\n391" for m in rerun)
    # Usage covers the whole turn, both fan-outs included.
    assert out["usage"]["total"]["calls"] == 6


# -- where the guidance goes through a tool loop -------------------------------------------------


class _Looping(BaseChatModel):
    """The aggregator over HTTP (the stand-in records every request) whose reply is replaced
    by a `calculator` call until `rounds` tool rounds are done; then the stand-in answers."""

    inner: BaseChatModel
    rounds: int

    @property
    def _llm_type(self) -> str:
        return "looping"

    def bind_tools(self, tools, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        reply = self.inner.invoke(messages, stop=stop, **kwargs)
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done < self.rounds:
            reply = tool_call("calculator", {"expression": f"{done} + {done}"}, f"c{done}")
        return ChatResult(generations=[ChatGeneration(message=reply)])


def _looping_factory(config, rounds: int):
    http = default_model_factory(config.providers)
    return lambda spec: (
        _Looping(inner=http(spec), rounds=rounds) if spec.model == "boss" else http(spec)
    )


def _graph_loop(stub, fanout: str, rounds: int = 3) -> list[list[dict]]:
    """The aggregator's requests, as the stand-in received them, over `rounds` tool rounds."""
    config = load_config(_config(stub.url, fanout=fanout))
    factory = _looping_factory(config, rounds)
    graph = build_moa_graph("demo", tools=[calculator], config=config, model_factory=factory)
    out = graph.compile().invoke(ARITHMETIC)
    assert out["messages"][-1].content == f"The result is {2 * (rounds - 1)}."
    return [request["messages"] for request in stub.requests("boss")]


def _agent_loop(stub, fanout: str, rounds: int = 3) -> list[list[dict]]:
    """The same loop with `MoAChatModel` driven by `create_agent`."""
    config = load_config(_config(stub.url, fanout=fanout))
    moa = MoAChatModel(preset="demo", config=config, model_factory=_looping_factory(config, rounds))
    out = create_agent(moa, tools=[calculator]).invoke(ARITHMETIC)
    assert out["messages"][-1].content == f"The result is {2 * (rounds - 1)}."
    return [request["messages"] for request in stub.requests("boss")]


_NOTE = ADVICE_PREDATES.split("{step}")[0]


def _is_note(message: dict) -> bool:
    """The note that the guidance predates the turn's latest tool calls."""
    return message["role"] == "user" and str(message["content"]).startswith(_NOTE)


def _is_guidance(message: dict) -> bool:
    text = str(message["content"])
    return message["role"] == "user" and text.startswith(GUIDANCE_TITLE) and not _is_note(message)


def _wire(messages: list[dict]) -> list[str]:
    """Each message as the provider reads it: its JSON, byte for byte."""
    return [json.dumps(m, ensure_ascii=False, separators=(",", ":")) for m in messages]


def _starts_with(request: list[dict], prefix: list[dict]) -> bool:
    return _wire(request[: len(prefix)]) == _wire(prefix)


def _calls_meet_their_results(messages: list[dict]) -> bool:
    """Every assistant turn with tool calls is followed at once by the results of its calls."""
    for i, message in enumerate(messages):
        ids = [call["id"] for call in message.get("tool_calls") or []]
        following = messages[i + 1 : i + 1 + len(ids)]
        if ids and [m.get("tool_call_id") for m in following] != ids:
            return False
    return True


@pytest.mark.parametrize("loop", [_graph_loop, _agent_loop], ids=["graph", "chat_model"])
def test_every_step_puts_each_guidance_after_the_newest_tool_results(stub, loop):
    requests = loop(stub, "every_step")

    assert stub.stats() == {"alpha": 4, "beta": 4, "boss": 4}
    for step, (before, after) in enumerate(itertools.pairwise(requests), start=2):
        # Step k's request is step k-1's without its guidance, then the new tool round and
        # the new guidance: all of step k-1's but its last message can come from a cache.
        assert _is_guidance(before[-1])
        assert _starts_with(after, before[:-1]), f"step {step}"
        assert after[-2]["role"] == "tool" and _is_guidance(after[-1])
    for request in requests:
        assert sum(_is_guidance(m) for m in request) == 1
        assert _calls_meet_their_results(request)


@pytest.mark.parametrize("loop", [_graph_loop, _agent_loop], ids=["graph", "chat_model"])
def test_every_n_keeps_the_guidance_in_place_until_the_references_rerun(stub, loop):
    first, second, third, fourth = loop(stub, "every_n:2")

    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 4}  # steps 1 and 3
    # Steps 2 and 4 add a tool round, and a note that the guidance predates its call: the
    # whole previous request is their prefix.
    assert _starts_with(second, first) and len(second) == len(first) + 3
    assert _starts_with(fourth, third) and len(fourth) == len(third) + 3
    for request, step, call in ((second, 1, "0 + 0"), (fourth, 3, "2 + 2")):
        assert _is_note(request[-1]) and request[-2]["role"] == "tool"
        note = request[-1]["content"]
        assert f"at step {step} of this turn" in note
        assert f'calculator({{"expression": "{call}"}})' in note
    assert not any(_is_note(m) for m in (*first, *third)), "fresh guidance needs no note"
    # Step 3 re-ran the references: step 2's guidance is gone, the new one follows the results.
    assert _starts_with(third, [m for m in second if not _is_guidance(m) and not _is_note(m)])
    assert third[-2]["role"] == "tool" and _is_guidance(third[-1])
    for request in (first, second, third, fourth):
        assert sum(_is_guidance(m) for m in request) == 1
        assert _calls_meet_their_results(request)


@pytest.mark.parametrize("loop", [_graph_loop, _agent_loop], ids=["graph", "chat_model"])
def test_per_turn_keeps_one_guidance_right_after_the_human_message(stub, loop):
    requests = loop(stub, "per_turn")

    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 4}
    for before, after in itertools.pairwise(requests):
        assert _starts_with(after, before)
    for request in requests:
        assert request[0] == {"role": "user", "content": "What is 17 * 23?"}
        assert _is_guidance(request[1])
        assert sum(_is_guidance(m) for m in request) == 1


def test_a_tool_result_preview_is_bounded_by_the_budget(stub):
    big = "x" * 5000
    graph = build_moa_graph(
        "demo",
        tools=[_echo_tool(big)],
        config=_config(stub.url, fanout="every_step", reference_tool_result_budget=200),
    ).compile()
    graph.invoke({"messages": [HumanMessage("What is 2 + 2?")]})
    rerun = stub.requests("alpha")[1]["messages"]
    (result,) = [m["content"] for m in rerun if m["content"].startswith("[tool result")]
    assert "[... 4800 chars omitted ...]" in result
    assert len(result) < 300


def _echo_tool(text: str):
    from langchain_core.tools import tool

    @tool("calculator")
    def big_result(expression: str) -> str:
        """Returns a large result."""
        return text

    return big_result


# -- layers --------------------------------------------------------------------------------------


def test_two_layers_feed_the_first_layers_answers_to_the_second(stub):
    events = []
    graph = _graph(stub, layers=2)
    for mode, part in graph.stream(ARITHMETIC, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(part)
        else:
            final = part

    assert stub.stats()["alpha"] == 2 and stub.stats()["beta"] == 2
    second_layer = stub.requests("alpha")[1]["messages"][-1]["content"]
    assert "Improve on them" in second_layer
    assert re.search(r'Answer from stub:alpha:\n<reference id="\w+">\n\[alpha\]', second_layer)
    assert re.search(r'Answer from stub:beta:\n<reference id="\w+">\n\[beta\]', second_layer)
    assert [(r["layer"], r["label"]) for r in final["references"]] == [
        (1, "stub:alpha"),
        (1, "stub:beta"),
        (2, "stub:alpha"),
        (2, "stub:beta"),
    ]
    assert sorted({e["layer"] for e in events if e["type"] == "moa_reference"}) == [1, 2]
    # The aggregator reads the last layer only: two references, numbered 1 and 2.
    guidance = _guidance(stub.requests("boss")[0])
    assert len(re.findall(r'\n<reference id="\w+">\n', guidance)) == 2
    assert "Reference 2 — stub:beta:" in guidance and "Reference 3" not in guidance
    assert "Other advisors on the panel" in guidance  # layer 2 answered the layer-2 prompt


# -- samples -------------------------------------------------------------------------------------


def test_samples_run_in_parallel_and_are_labelled(stub):
    stub.configure({"alpha": {"latency": 0.4}})
    started = time.monotonic()
    out = _graph(stub, refs=({"model": "alpha", "samples": 3},)).invoke(ARITHMETIC)
    assert [r["label"] for r in out["references"]] == [
        "stub:alpha#1",
        "stub:alpha#2",
        "stub:alpha#3",
    ]
    assert [r["index"] for r in out["references"]] == [0, 1, 2]
    assert stub.stats()["alpha"] == 3
    assert time.monotonic() - started < 1.1  # three 0.4 s samples at once, not 1.2 s in a row
    guidance = _guidance(stub.requests("boss")[0])
    assert "Reference 3 — stub:alpha#3:" in guidance


# -- stragglers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_a_straggler_is_cut_at_the_deadline(stub, mode):
    stub.configure({"beta": {"latency": 10}})
    graph = _graph(stub, references_deadline_s=0.5)
    started = time.monotonic()
    out = graph.invoke(ARITHMETIC) if mode == "invoke" else await graph.ainvoke(ARITHMETIC)
    elapsed = time.monotonic() - started

    alpha, beta = out["references"]
    assert alpha["status"] == "ok"
    assert beta["status"] == "failed" and beta["text"] == "[failed: timed out after 0.5s]"
    assert elapsed < 2.0, f"the turn took {elapsed:.2f}s despite a 0.5 s deadline"
    assert "391" in out["messages"][-1].content


async def test_a_slot_timeout_cuts_only_that_slot(stub):
    stub.configure({"alpha": {"latency": 10}})
    graph = _graph(stub, refs=({"model": "alpha", "reference_timeout_s": 0.3}, "beta"))
    out = await graph.ainvoke(ARITHMETIC)
    assert [r["status"] for r in out["references"]] == ["failed", "ok"]
    assert out["references"][0]["text"] == "[failed: timed out after 0.3s]"
    await asyncio.sleep(0.1)
    assert stub.disconnects().get("alpha") == 1  # the request was cancelled, not abandoned


# -- thin advice and the degraded policy -----------------------------------------------------------


def test_thin_advice_is_flagged_below_min_references(stub):
    stub.configure({"beta": {"fault": {"kind": "status", "status": 400}}})
    _graph(stub, refs=("alpha", {"model": "beta", "max_retries": 0}), min_references=2).invoke(
        ARITHMETIC
    )
    guidance = _guidance(stub.requests("boss")[0])
    assert "Only 1 of the 2 references answered, fewer than the 2" in guidance
    assert "Unavailable references: stub:beta (failed)." in guidance


def test_silent_policy_leaves_unavailable_references_out(stub):
    stub.configure({"beta": {"fault": {"kind": "status", "status": 400}}})
    _graph(
        stub,
        refs=("alpha", {"model": "beta", "max_retries": 0}),
        degraded_reference_policy="silent",
    ).invoke(ARITHMETIC)
    guidance = _guidance(stub.requests("boss")[0])
    assert "Unavailable references" not in guidance and "stub:beta" not in guidance
    assert "Reference 1 — stub:alpha:" in guidance


# -- privacy filter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "people_see", "aggregator_sees"),
    [
        ("off", EMAIL, EMAIL),
        ("display", "[redacted: email]", EMAIL),
        ("full", "[redacted: email]", "[redacted: email]"),
    ],
)
def test_the_privacy_filter(stub, policy, people_see, aggregator_sees):
    stub.configure({"alpha": {"reply": f"Write to {EMAIL} on 2026-11-26 about line 42."}})
    out = _graph(stub, privacy_filter=policy).invoke(ARITHMETIC)
    alpha = out["references"][0]
    assert alpha["text"] == f"Write to {people_see} on 2026-11-26 about line 42."
    assert f"Write to {aggregator_sees} on 2026-11-26" in _guidance(stub.requests("boss")[0])
    if policy == "display":
        assert EMAIL not in repr(out["references"])


def test_the_chat_model_honours_layers_samples_and_the_deadline(stub):
    stub.configure({"gamma": {"latency": 10}})
    config = _config(
        stub.url,
        refs=({"model": "alpha", "samples": 2}, "gamma"),
        layers=2,
        references_deadline_s=0.4,
    )
    started = time.monotonic()
    reply = MoAChatModel(preset="demo", config=config).invoke("hello")
    assert time.monotonic() - started < 3
    refs = reply.response_metadata["moa_references"]
    assert [(r["label"], r["status"]) for r in refs] == [
        ("stub:alpha#1", "ok"),
        ("stub:alpha#2", "ok"),
        ("stub:gamma", "failed"),
        ("stub:alpha#1", "ok"),
        ("stub:alpha#2", "ok"),
        ("stub:gamma", "failed"),
    ]

"""Prices: genai-prices' table by default, the config's `*_cost_per_mtok` on top, per rate."""

import logging
import os
import subprocess
import sys

import pytest
import yaml
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage

from moa_graph import ModelSpec
from moa_graph.prices import (
    GENAI_PROVIDER_IDS,
    cost_usd,
    default_price,
    price_note,
    unpriced_models,
)
from moa_graph.usage import add_usage, call_usage, format_usage


def _reply(**usage) -> AIMessage:
    usage.setdefault("total_tokens", usage["input_tokens"] + usage["output_tokens"])
    return AIMessage("x", usage_metadata=usage)


@pytest.mark.parametrize(
    ("provider", "model", "entry"),
    [
        ("openai", "gpt-4o", "gpt-4o"),
        ("openai", "gpt-5.5", "gpt-5.5"),
        ("openrouter", "anthropic/claude-opus-4.8", "anthropic/claude-opus-4.8"),
        ("groq", "llama-3.3-70b-versatile", "llama-3.3-70b-versatile"),
        ("deepseek", "deepseek-chat", "deepseek-chat"),
        ("xai", "grok-3", "grok-3"),  # our `xai` is genai-prices' `x-ai`
        ("mistral", "mistral-large-latest", "mistral-large"),
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", None),
        ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct", None),
    ],
)
def test_real_model_names_resolve_to_genai_prices_entries(provider, model, entry):
    info = default_price(ModelSpec(provider=provider, model=model))
    assert info is not None
    if entry is not None:
        assert info.id == entry


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4o"), ("groq", "llama-3.3-70b-versatile"), ("xai", "grok-3")],
)
def test_a_known_model_is_priced_by_default_as_genai_prices_prices_it(provider, model):
    spec = ModelSpec(provider=provider, model=model)
    usage = call_usage("reference", spec, _reply(input_tokens=1200, output_tokens=300))
    expected = calc_price(
        Usage(input_tokens=1200, output_tokens=300),
        model,
        provider_id=GENAI_PROVIDER_IDS[provider],
    ).total_price
    assert usage["models"][f"reference {spec.label}"]["cost_usd"] == pytest.approx(float(expected))
    assert usage["total"]["cost_usd"] == pytest.approx(float(expected))


def test_anthropic_cache_writes_are_priced_at_their_own_rate():
    # The case: 99 input tokens of which 20 written to the cache, 3 output tokens.
    # At the plain input rate that was $0.000342; the cache-write rate makes it $0.000357.
    spec = ModelSpec(provider="anthropic", model="claude-sonnet-4-5")
    reply = _reply(
        input_tokens=99,
        output_tokens=3,
        input_token_details={"cache_creation": 20, "cache_read": 0},
    )
    model = call_usage("aggregator", spec, reply)["models"][
        "aggregator anthropic:claude-sonnet-4-5"
    ]
    expected = calc_price(
        Usage(input_tokens=99, cache_write_tokens=20, output_tokens=3),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    ).total_price
    assert model["cost_usd"] == pytest.approx(float(expected))
    assert model["cost_usd"] == pytest.approx(0.000357)
    assert model["input_token_details"] == {"cache_creation": 20}


def test_cached_reads_are_priced_at_their_own_rate():
    spec = ModelSpec(provider="openai", model="gpt-4o")  # $2.50 input, $1.25 cached, $10 output
    reply = _reply(input_tokens=1000, output_tokens=0, input_token_details={"cache_read": 800})
    model = call_usage("reference", spec, reply)["models"]["reference openai:gpt-4o"]
    assert model["cached_input_tokens"] == 800
    assert model["cost_usd"] == pytest.approx((200 * 2.5 + 800 * 1.25) / 1e6)


def test_reasoning_tokens_are_priced_at_their_own_rate_when_the_model_has_one():
    spec = ModelSpec(
        provider="stub",
        model="thinker",
        input_cost_per_mtok=1.0,
        output_cost_per_mtok=4.0,
        reasoning_cost_per_mtok=2.0,
    )
    reply = _reply(input_tokens=100, output_tokens=500, output_token_details={"reasoning": 400})
    model = call_usage("reference", spec, reply)["models"]["reference stub:thinker"]
    assert model["cost_usd"] == pytest.approx((100 * 1.0 + 100 * 4.0 + 400 * 2.0) / 1e6)
    assert model["output_token_details"] == {"reasoning": 400}
    # Without a reasoning rate, reasoning is output like the rest.
    plain = spec.model_copy(update={"reasoning_cost_per_mtok": None})
    cost = call_usage("reference", plain, reply)["models"]["reference stub:thinker"]["cost_usd"]
    assert cost == pytest.approx((100 * 1.0 + 500 * 4.0) / 1e6)


def test_a_price_in_the_config_replaces_that_rate_only():
    spec = ModelSpec(provider="openai", model="gpt-4o", input_cost_per_mtok=2.0)
    reply = _reply(input_tokens=1000, output_tokens=100, input_token_details={"cache_read": 400})
    model = call_usage("reference", spec, reply)["models"]["reference openai:gpt-4o"]
    # input from the config, cached reads and output still genai-prices' ($1.25, $10).
    assert model["cost_usd"] == pytest.approx((600 * 2.0 + 400 * 1.25 + 100 * 10.0) / 1e6)


def test_cache_writes_can_be_priced_in_the_config():
    spec = ModelSpec(
        provider="local",
        model="m",
        input_cost_per_mtok=1.0,
        output_cost_per_mtok=1.0,
        cache_write_cost_per_mtok=5.0,
    )
    reply = _reply(input_tokens=100, output_tokens=0, input_token_details={"cache_creation": 50})
    assert cost_usd(
        spec, input_tokens=100, output_tokens=0, input_token_details={"cache_creation": 50}
    ) == pytest.approx((50 * 1.0 + 50 * 5.0) / 1e6)
    assert call_usage("reference", spec, reply)["total"]["cost_usd"] == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(provider="stub", model="analyst"),  # a provider genai-prices cannot know
        ModelSpec(provider="ollama", model="qwen3"),  # a local one
        ModelSpec(provider="openai", model="no-such-model-9"),  # a model it does not know
    ],
)
def test_a_model_nobody_prices_stays_unpriced(spec):
    usage = call_usage("reference", spec, _reply(input_tokens=10, output_tokens=5))
    assert "cost_usd" not in usage["models"][f"reference {spec.label}"]
    assert "cost_usd" not in usage["total"]
    assert unpriced_models([spec]) == [spec.label]


def test_the_price_note_names_each_unpriced_model_once():
    specs = [
        ModelSpec(provider="stub", model="analyst", samples=2),
        ModelSpec(provider="openai", model="gpt-4o"),
        ModelSpec(provider="stub", model="analyst"),
        ModelSpec(provider="stub", model="boss", input_cost_per_mtok=1.0),
    ]
    note = price_note(specs)
    assert note is not None
    assert note.startswith("no price known for stub:analyst:")
    assert note.count("stub:analyst") == 1 and "gpt-4o" not in note and "boss" not in note
    assert "input_cost_per_mtok" in note
    assert price_note(specs[1:2]) is None


def test_an_unpriced_model_is_logged_once(caplog):
    spec = ModelSpec(provider="stub", model="logged-once")
    with caplog.at_level(logging.INFO, logger="moa_graph.prices"):
        for _ in range(3):
            call_usage("reference", spec, _reply(input_tokens=1, output_tokens=1))
    assert [r.getMessage() for r in caplog.records].count(
        "no price known for stub:logged-once: its usage has no cost"
    ) == 1


def test_usage_carries_langchains_token_details_per_model_and_in_total():
    spec = ModelSpec(provider="anthropic", model="claude-sonnet-4-5")
    first = call_usage(
        "reference",
        spec,
        _reply(
            input_tokens=100,
            output_tokens=10,
            input_token_details={"cache_creation": 60, "cache_read": 0},
        ),
    )
    second = call_usage(
        "reference",
        spec,
        _reply(
            input_tokens=100,
            output_tokens=30,
            input_token_details={"cache_read": 60},
            output_token_details={"reasoning": 20},
        ),
    )
    before = repr(first)
    usage = add_usage(add_usage(None, first), second)
    assert repr(first) == before  # the reducer leaves its inputs alone
    model = usage["models"]["reference anthropic:claude-sonnet-4-5"]
    assert model["input_token_details"] == {"cache_creation": 60, "cache_read": 60}
    assert model["output_token_details"] == {"reasoning": 20}
    assert model["cached_input_tokens"] == 60
    assert usage["total"]["input_token_details"] == {"cache_creation": 60, "cache_read": 60}
    assert usage["total"]["cost_usd"] == pytest.approx(
        first["total"]["cost_usd"] + second["total"]["cost_usd"]
    )
    assert format_usage(usage).endswith(f"${usage['total']['cost_usd']:.4f}")


def test_an_inconsistent_usage_is_left_unpriced_instead_of_failing():
    spec = ModelSpec(provider="openai", model="gpt-4o")
    reply = _reply(input_tokens=10, output_tokens=1, input_token_details={"cache_read": 50})
    usage = call_usage("reference", spec, reply)
    assert usage["total"]["calls"] == 1
    assert "cost_usd" not in usage["total"]


def test_the_cli_prints_a_cost_for_the_demo_when_the_stand_ins_models_have_prices(tmp_path):
    # The offline demo's preset and models, priced in a config file, on the stand-in.
    from moa_graph.testing.offline import OFFLINE_PRESET, offline_config, offline_stub_models
    from tests.workers.stub import StubProcess

    stub = StubProcess({name: {"latency": 0.0} for name in offline_stub_models()})
    try:
        demo = offline_config(stub.url)
        prices = {"input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}
        preset = demo.preset(OFFLINE_PRESET).model_dump(exclude={"name"}, exclude_defaults=True)
        for model in [*preset["reference_models"], preset["aggregator"]]:
            model.update(prices)
        body = {"providers": {"stub": {"base_url": stub.url}}, "presets": {"demo": preset}}
        config = tmp_path / "moa.yaml"
        config.write_text(yaml.safe_dump({"moa": body}), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env = {k: v for k, v in env.items() if not k.startswith("MOA_GRAPH_")}
        result = subprocess.run(
            [sys.executable, "-m", "moa_graph.cli", "run", "--config", str(config), "17 * 23?"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env | {"XDG_STATE_HOME": str(tmp_path)},
        )
    finally:
        stub.stop()
    assert result.returncode == 0, result.stderr
    summary = next(line for line in result.stderr.splitlines() if "calls," in line)
    assert "5 calls," in summary and ", $0.0" in summary


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(
        [
            ("openai", "gpt-4o"),
            ("openai", "gpt-5.5"),  # long-context tiers
            ("anthropic", "claude-sonnet-4-5"),  # tiers, cache writes, 1h cache writes
            ("openrouter", "anthropic/claude-opus-4.8"),
            ("xai", "grok-3"),
        ]
    ),
    input_tokens=st.integers(0, 600_000),
    output_tokens=st.integers(0, 50_000),
    read=st.floats(0, 1),
    write=st.floats(0, 1),
    long_lived=st.floats(0, 1),
    reasoning=st.floats(0, 1),
)
def test_costs_match_genai_prices_for_any_usage(
    model, input_tokens, output_tokens, read, write, long_lived, reasoning
):
    provider, name = model
    cache_read = int(input_tokens * read)
    cache_write = int((input_tokens - cache_read) * write)
    write_1h = int(cache_write * long_lived)
    reasoning_tokens = int(output_tokens * reasoning)
    ours = cost_usd(
        ModelSpec(provider=provider, model=name),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_token_details={
            "cache_read": cache_read,
            "cache_creation": cache_write,
            "ephemeral_5m_input_tokens": cache_write - write_1h,
            "ephemeral_1h_input_tokens": write_1h,
        },
        output_token_details={"reasoning": reasoning_tokens},
    )
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "cache_write_5m_tokens": cache_write - write_1h,
        "cache_write_1h_tokens": write_1h,
        "output_reasoning_tokens": reasoning_tokens,
    }
    theirs = calc_price(
        Usage(**{k: v for k, v in usage.items() if v}),
        name,
        provider_id=GENAI_PROVIDER_IDS[provider],
    ).total_price
    assert ours == pytest.approx(float(theirs), rel=1e-9, abs=1e-12)

"""Rate limits: `requests_per_second` per provider and per model, against the stand-in over HTTP.

A provider's limit is one `InMemoryRateLimiter` for all its models in the process; the direct
reference path waits for it as `ChatOpenAI` does.
"""

import time

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langchain_core.rate_limiters import InMemoryRateLimiter

from moa_graph import ModelSpec, ProviderSpec, build_moa_graph, direct
from moa_graph.providers import default_model_factory, provider_table

QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}


def _config(url: str, *, refs: int, samples: int, limited: dict, model_limit: dict | None = None):
    reference = {"provider": "limited", "samples": samples, **(model_limit or {})}
    return {
        "moa": {
            "providers": {
                "limited": {"base_url": url, **limited},
                "free": {"base_url": url},  # the aggregator: outside the limit under test
            },
            "presets": {
                "demo": {
                    "reference_models": [reference | {"model": f"r{i}"} for i in range(refs)],
                    "aggregator": {"provider": "free", "model": "boss"},
                }
            },
        }
    }


@pytest.fixture
def direct_finishes(monkeypatch) -> list[float]:
    """When each direct reference request finished (a spy: the call goes through unchanged)."""
    finished: list[float] = []
    real = direct.apost

    async def spy(client, spec, messages, **options):
        reply = await real(client, spec, messages, **options)
        finished.append(time.monotonic())
        return reply

    monkeypatch.setattr(direct, "apost", spy)
    return finished


async def test_32_direct_slots_against_a_10_rps_provider_spread_over_about_3_seconds(
    stub, direct_finishes
):
    config = _config(stub.url, refs=8, samples=4, limited={"requests_per_second": 10})
    started = time.monotonic()
    out = await build_moa_graph("demo", config=config).compile().ainvoke(QUESTION)

    assert [r["status"] for r in out["references"]] == 32 * ["ok"]
    assert len(direct_finishes) == 32  # the direct path, not ChatOpenAI, waited for the limit
    spread = max(direct_finishes) - started
    assert 2.4 < spread < 8, spread  # 32 requests at 10 a second: ~3.2 s, not all at once
    assert sum(stub.stats().get(f"r{i}", 0) for i in range(8)) == 32


async def test_without_a_limit_the_same_fan_out_is_not_held_back(stub, direct_finishes):
    config = _config(stub.url, refs=8, samples=4, limited={})
    started = time.monotonic()
    await build_moa_graph("demo", config=config).compile().ainvoke(QUESTION)
    assert len(direct_finishes) == 32
    assert max(direct_finishes) - started < 2.0


class _Watching(BaseCallbackHandler):
    """Any handler: references then go through `ChatOpenAI.ainvoke`."""


def test_a_models_own_limit_holds_through_chatopenai_and_sync_calls(stub):
    # 1 reference x 6 samples at 5 rps (the provider itself unlimited), sync, watched.
    config = _config(
        stub.url, refs=1, samples=6, limited={}, model_limit={"requests_per_second": 5}
    )
    started = time.monotonic()
    out = (
        build_moa_graph("demo", config=config)
        .compile()
        .invoke(QUESTION, {"callbacks": [_Watching()]})
    )
    elapsed = time.monotonic() - started
    assert [r["status"] for r in out["references"]] == 6 * ["ok"]
    assert 1.0 < elapsed < 6, elapsed  # six tokens at 5 a second: ~1.2 s


def test_all_models_of_a_provider_share_one_limiter_within_the_process():
    table = {"shared": ProviderSpec(base_url="http://127.0.0.1:9/v1", requests_per_second=3)}
    references = default_model_factory(table, reference=True)
    aggregators = default_model_factory(table, reference=False)
    a = references(ModelSpec(provider="shared", model="a"))
    b = aggregators(ModelSpec(provider="shared", model="b"))
    assert isinstance(a.rate_limiter, InMemoryRateLimiter)
    assert a.rate_limiter is b.rate_limiter
    assert a.rate_limiter.requests_per_second == 3


def test_a_model_limit_applies_on_top_of_its_providers():
    table = {"shared": ProviderSpec(base_url="http://127.0.0.1:9/v1", requests_per_second=3)}
    factory = default_model_factory(table)
    own = factory(ModelSpec(provider="shared", model="a", requests_per_second=1, max_burst=2))
    other = factory(ModelSpec(provider="shared", model="b"))
    limiters = own.rate_limiter.limiters
    assert [lim.requests_per_second for lim in limiters] == [1, 3]
    assert limiters[0].max_bucket_size == 2
    assert limiters[1] is other.rate_limiter  # the provider's share is the same bucket


def test_an_unlimited_model_has_no_rate_limiter():
    factory = default_model_factory({"open": ProviderSpec(base_url="http://127.0.0.1:9/v1")})
    assert factory(ModelSpec(provider="open", model="a")).rate_limiter is None


def test_a_built_in_provider_given_only_a_limit_keeps_its_endpoint_and_key():
    table = provider_table({"openai": ProviderSpec(requests_per_second=5)})
    assert table["openai"].base_url == "https://api.openai.com/v1"
    assert table["openai"].api_key_env == "OPENAI_API_KEY"
    assert table["openai"].requests_per_second == 5
    replaced = provider_table({"openai": ProviderSpec(base_url="http://127.0.0.1:9/v1")})
    assert replaced["openai"].api_key_env is None  # a new endpoint replaces the provider

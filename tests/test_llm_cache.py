"""LLM caches: a reference is answered from LangChain's cache exactly when `ChatOpenAI` would.

The direct reference path does not look calls up itself: a model whose calls a cache would
answer (`set_llm_cache`, or the model's own `cache`) goes through `ChatOpenAI`. The stand-in
records every request it receives.
"""

from collections.abc import Iterator

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.messages import HumanMessage

from moa_graph import ModelSpec, ProviderSpec, build_moa_graph, direct
from moa_graph.providers import ProviderTableFactory, provider_table

QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}
REFERENCES = ("alpha", "beta")


def _config(url: str) -> dict:
    return {
        "moa": {
            "providers": {"stub": {"base_url": url}},
            "presets": {
                "demo": {
                    "reference_models": [{"provider": "stub", "model": m} for m in REFERENCES],
                    "aggregator": {"provider": "stub", "model": "boss"},
                }
            },
        }
    }


@pytest.fixture
def global_cache() -> Iterator[InMemoryCache]:
    """`set_llm_cache(InMemoryCache())` for the test; the previous cache afterwards."""
    previous = get_llm_cache()
    cache = InMemoryCache()
    set_llm_cache(cache)
    yield cache
    set_llm_cache(previous)


@pytest.fixture
def direct_calls(monkeypatch) -> list[str]:
    """Models asked through `moa_graph.direct` (a spy: the call goes through unchanged)."""
    seen: list[str] = []
    real_async, real_sync = direct.apost, direct.post

    async def spy_async(client, spec, messages, **options):
        seen.append(spec.model)
        return await real_async(client, spec, messages, **options)

    def spy_sync(client, spec, messages, **options):
        seen.append(spec.model)
        return real_sync(client, spec, messages, **options)

    monkeypatch.setattr(direct, "apost", spy_async)
    monkeypatch.setattr(direct, "post", spy_sync)
    return seen


class _CachingFactory(ProviderTableFactory):
    """The provider table, with a cache (or `cache=False`) on each model it builds."""

    def __init__(self, url: str, cache: InMemoryCache | bool) -> None:
        super().__init__(provider_table({"stub": ProviderSpec(base_url=url)}), timeout=30)
        self.cache = cache

    def __call__(self, spec: ModelSpec):
        model = super().__call__(spec)
        model.cache = self.cache
        return model


def _requests(stub) -> dict[str, int]:
    stats = stub.stats()
    return {name: stats.get(name, 0) for name in REFERENCES}


async def test_with_a_global_cache_two_identical_turns_ask_each_reference_once(
    stub, global_cache, direct_calls
):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    first = await graph.ainvoke(QUESTION)
    second = await graph.ainvoke(QUESTION)
    assert _requests(stub) == {"alpha": 1, "beta": 1}
    assert direct_calls == []  # cached models go through ChatOpenAI, which looks them up
    assert [r["text"] for r in second["references"]] == [r["text"] for r in first["references"]]


def test_a_global_cache_also_answers_sync_turns(stub, global_cache, direct_calls):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    graph.invoke(QUESTION)
    graph.invoke(QUESTION)
    assert _requests(stub) == {"alpha": 1, "beta": 1}
    assert direct_calls == []


async def test_a_models_own_cache_answers_its_second_identical_call(stub, direct_calls):
    assert get_llm_cache() is None
    factory = _CachingFactory(stub.url, InMemoryCache())
    graph = build_moa_graph("demo", config=_config(stub.url), model_factory=factory).compile()
    await graph.ainvoke(QUESTION)
    await graph.ainvoke(QUESTION)
    assert _requests(stub) == {"alpha": 1, "beta": 1}
    assert direct_calls == []


async def test_cache_false_on_a_model_ignores_the_global_cache(stub, global_cache, direct_calls):
    factory = _CachingFactory(stub.url, False)
    graph = build_moa_graph("demo", config=_config(stub.url), model_factory=factory).compile()
    await graph.ainvoke(QUESTION)
    await graph.ainvoke(QUESTION)
    assert _requests(stub) == {"alpha": 2, "beta": 2}
    assert sorted(direct_calls) == ["alpha", "alpha", "beta", "beta"]  # still the fast path


async def test_without_a_cache_each_turn_asks_each_reference_directly(stub, direct_calls):
    assert get_llm_cache() is None
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    await graph.ainvoke(QUESTION)
    await graph.ainvoke(QUESTION)
    assert _requests(stub) == {"alpha": 2, "beta": 2}
    assert sorted(direct_calls) == ["alpha", "alpha", "beta", "beta"]


async def test_a_cache_set_after_the_first_turn_is_honoured_from_then_on(stub, direct_calls):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    await graph.ainvoke(QUESTION)  # direct, uncached
    previous = get_llm_cache()
    set_llm_cache(InMemoryCache())
    try:
        await graph.ainvoke(QUESTION)  # through ChatOpenAI: a miss, stored
        await graph.ainvoke(QUESTION)  # a hit
    finally:
        set_llm_cache(previous)
    assert _requests(stub) == {"alpha": 2, "beta": 2}
    assert sorted(direct_calls) == ["alpha", "beta"]

"""LangSmith attribution: runs of provider-table models name their provider, not "openai".

LangSmith reads `ls_provider` and `ls_model_name` from a run's metadata; a callback handler
sees the same metadata in `on_chat_model_start`.
"""

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage

from moa_graph import ModelSpec, ProviderSpec, build_moa_graph
from moa_graph.providers import default_model_factory

QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}


class _Starts(BaseCallbackHandler):
    """Records each chat model run's name, metadata and invocation params."""

    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}

    def on_chat_model_start(self, serialized, messages, *, name=None, metadata=None, **kwargs):
        self.runs[name] = {"metadata": metadata or {}, "params": kwargs.get("invocation_params")}


def _config(url: str) -> dict:
    # Built-in provider names pointed at the stand-in: the names are what is traced.
    providers = {name: {"base_url": url} for name in ("groq", "deepseek", "openrouter")}
    return {
        "moa": {
            "providers": providers,
            "presets": {
                "demo": {
                    "reference_models": [
                        {"provider": "groq", "model": "alpha"},
                        {"provider": "deepseek", "model": "beta"},
                    ],
                    "aggregator": {"provider": "openrouter", "model": "boss"},
                }
            },
        }
    }


async def test_reference_and_aggregator_runs_report_the_provider_tables_name(stub):
    starts = _Starts()
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    await graph.ainvoke(QUESTION, {"callbacks": [starts]})

    expected = {
        "moa_reference:groq:alpha": ("groq", "alpha"),
        "moa_reference:deepseek:beta": ("deepseek", "beta"),
        "moa_aggregator:openrouter:boss": ("openrouter", "boss"),
    }
    for run, (provider, model) in expected.items():
        metadata = starts.runs[run]["metadata"]
        assert metadata["ls_provider"] == provider, run
        assert metadata["ls_model_name"] == model, run
        assert starts.runs[run]["params"]["model"] == model  # what was sent, unchanged
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 1}


def test_a_sync_call_of_a_table_model_reports_its_provider(stub):
    starts = _Starts()
    factory = default_model_factory({"fireworks": ProviderSpec(base_url=stub.url)})
    model = factory(ModelSpec(provider="fireworks", model="alpha", temperature=0.2))
    model.invoke("hi", {"callbacks": [starts], "run_name": "probe"})
    metadata = starts.runs["probe"]["metadata"]
    assert metadata["ls_provider"] == "fireworks"
    assert metadata["ls_model_name"] == "alpha"
    assert metadata["ls_temperature"] == 0.2


def test_the_openai_provider_is_still_reported_as_openai(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    model = default_model_factory()(ModelSpec(provider="openai", model="gpt-4.1"))
    assert model._get_ls_params()["ls_provider"] == "openai"

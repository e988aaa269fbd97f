"""A key the provider echoes late in a long error body reaches no text moa_graph keeps or emits:
not a failed reference's text, the checkpoint, `MoAAggregatorError` and its cause chain, nor
the callback events of moa_graph's own runs."""

import asyncio
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from moa_graph import MoAAggregatorError, MoAChatModel, build_moa_graph, providers
from moa_graph.errors import ProviderError
from moa_graph.failures import describe_error
from moa_graph.providers import scrub_secrets

KEY = "sk-SENTINEL-7f3a9c2e41b8d6f05e"
KEY_ENV = "MOA_TEST_PROVIDER_KEY"  # no fragment of the key in its name
QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}
# The key at characters 268-298 of the message: a cut at 300 characters of the error text
# (which starts with "Error code: 401 - ") would keep its first 14.
ECHO = (
    ("Authentication failed for this request; the gateway logged the headers it received. " * 3)[
        :261
    ]
    + f"Bearer {KEY} was not accepted. "
    + "Check the project settings. " * 20
)
ECHOING_401 = {"fault": {"kind": "status", "status": 401, "message": ECHO}}


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def _fragments(key: str = KEY, size: int = 8) -> list[str]:
    return [key[i : i + size] for i in range(len(key) - size + 1)]


def _assert_keyless(text: str | bytes) -> None:
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    found = [fragment for fragment in _fragments() if fragment in data]
    assert not found, f"key fragments {found} in {data[:2000]!r}"


def _config(url: str) -> dict:
    def model(name: str) -> dict:
        return {"provider": "stub", "model": name, "max_retries": 0, "timeout": 5}

    return {
        "moa": {
            "providers": {"stub": {"base_url": url, "api_key_env": KEY_ENV}},
            "presets": {
                "demo": {
                    "reference_models": [model("alpha"), model("beta")],
                    "aggregator": model("boss"),
                }
            },
        }
    }


def _chain(error: BaseException) -> Iterator[BaseException]:
    """Every exception reachable through `__cause__` and `__context__`, the error included."""
    seen: list[BaseException] = []
    todo = [error]
    while todo:
        link = todo.pop()
        if any(link is s for s in seen):
            continue
        seen.append(link)
        yield link
        todo += [under for under in (link.__cause__, link.__context__) if under is not None]


def _error_texts(error: BaseException) -> str:
    parts = ["".join(traceback.format_exception(error))]
    for link in _chain(error):
        parts += [str(link), repr(link), repr(link.args), repr(vars(link))]
    return "\n".join(parts)


def _sqlite_bytes(file: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(file.parent.glob(file.name + "*")))


THREAD = {"configurable": {"thread_id": "t"}}


def _run_checkpointed(graph: Any, mode: str, file: Path) -> Any:
    """One turn of `graph` on a SQLite checkpointer in `file`."""
    if mode == "invoke":
        with SqliteSaver.from_conn_string(str(file)) as saver:
            return graph.compile(checkpointer=saver).invoke(QUESTION, THREAD)

    async def run() -> Any:
        async with AsyncSqliteSaver.from_conn_string(str(file)) as saver:
            return await graph.compile(checkpointer=saver).ainvoke(QUESTION, THREAD)

    return asyncio.run(run())


def _run(graph: Any, mode: str, turn: Any, config: Any) -> Any:
    if mode == "invoke":
        return graph.invoke(turn, config)
    return asyncio.run(graph.ainvoke(turn, config))


MODES = pytest.mark.parametrize("mode", ["invoke", "ainvoke"])


def test_scrubbing_comes_before_the_cut(stub):
    stub.configure({"alpha": ECHOING_401})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    out = graph.invoke(QUESTION)
    assert "***" in out["references"][0]["text"]  # the key was echoed, and scrubbed whole
    assert len(describe_error(ValueError(ECHO))) <= 300 + len("ValueError: ")


@MODES
def test_a_key_echoed_late_in_a_reference_error_is_not_in_its_text_or_the_checkpoint(
    stub, tmp_path, mode
):
    stub.configure({"alpha": ECHOING_401})
    file = tmp_path / "threads.sqlite"
    out = _run_checkpointed(build_moa_graph("demo", config=_config(stub.url)), mode, file)

    alpha, beta = out["references"]
    assert alpha["status"] == "failed" and beta["status"] == "ok"
    assert alpha["text"].startswith("[failed: ") and "401" in alpha["text"]
    _assert_keyless(alpha["text"])
    _assert_keyless(_sqlite_bytes(file))


@MODES
def test_a_failed_aggregator_error_and_its_whole_cause_chain_carry_no_key(stub, tmp_path, mode):
    stub.configure({"boss": ECHOING_401})
    file = tmp_path / "threads.sqlite"
    graph = build_moa_graph("demo", config=_config(stub.url))
    with pytest.raises(MoAAggregatorError) as info:
        _run_checkpointed(graph, mode, file)

    error = info.value
    assert str(error).startswith("aggregator stub:boss failed: ") and "401" in str(error)
    _assert_keyless(_error_texts(error))
    _assert_keyless(_sqlite_bytes(file))
    with SqliteSaver.from_conn_string(str(file)) as saver:  # still resumable
        assert graph.compile(checkpointer=saver).get_state(THREAD).next == ("aggregator",)
    # The error stays useful: its cause says what the provider said, without the key.
    cause = error.__cause__
    assert isinstance(cause, ProviderError)
    assert cause.status_code == 401 and cause.type_name.endswith("AuthenticationError")
    assert "was not accepted" in str(cause) and "Bearer ***" in str(cause)
    assert error.__context__ is None
    assert cause.__cause__ is None and cause.__context__ is None


def _with_locals(error: BaseException) -> str:
    """The error's traceback with every frame's locals, as Sentry and `capture_locals` show it."""
    return "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())


@MODES
def test_no_frame_of_the_aggregator_errors_traceback_holds_the_key(stub, mode):
    stub.configure({"boss": ECHOING_401})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    with pytest.raises(MoAAggregatorError) as info:
        _run(graph, mode, QUESTION, None)

    _assert_keyless(_with_locals(info.value))
    for link in _chain(info.value):
        tb = link.__traceback__
        while tb is not None:  # no frame holds the provider's exception (key or not)
            values = tb.tb_frame.f_locals.values()
            assert not any(type(v).__module__.startswith("openai") for v in values)
            tb = tb.tb_next


@MODES
def test_the_chat_models_error_with_its_frames_locals_carries_no_key(stub, mode):
    stub.configure({"alpha": ECHOING_401, "boss": ECHOING_401})
    model = MoAChatModel(preset="demo", config=_config(stub.url))
    with pytest.raises(MoAAggregatorError) as info:
        _run(model, mode, "What is 17 * 23?", None)

    _assert_keyless(_with_locals(info.value))


def test_the_provider_error_keeps_where_the_call_failed_scrubbed_and_without_its_frames(stub):
    stub.configure({"boss": ECHOING_401})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    with pytest.raises(MoAAggregatorError) as info:
        graph.invoke(QUESTION)

    cause = info.value.__cause__
    assert isinstance(cause, ProviderError) and cause.__traceback__ is None
    assert cause.provider_traceback.startswith("Traceback (most recent call last):")
    assert "openai" in cause.provider_traceback and "Bearer ***" in cause.provider_traceback
    _assert_keyless(cause.provider_traceback)
    # Printed with the error, as a note of its cause.
    assert cause.provider_traceback in "".join(traceback.format_exception(info.value))


class Recorder(BaseCallbackHandler):
    """Every callback event as text, by run, with each run's name."""

    def __init__(self) -> None:
        self.names: dict[UUID, str] = {}
        self.events: list[tuple[UUID, str, str]] = []

    def _record(self, event: str, run_id: UUID, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("name"):
            self.names[run_id] = kwargs["name"]
        texts = [
            _error_texts(value) if isinstance(value, BaseException) else repr(value)
            for value in (*args, *kwargs.values())
        ]
        self.events.append((run_id, event, "\n".join(texts)))

    def on_chain_start(self, serialized, inputs, *, run_id, **kwargs):
        self._record("chain_start", run_id, inputs, **kwargs)

    def on_chain_end(self, outputs, *, run_id, **kwargs):
        self._record("chain_end", run_id, outputs, **kwargs)

    def on_chain_error(self, error, *, run_id, **kwargs):
        self._record("chain_error", run_id, error, **kwargs)

    def on_chat_model_start(self, serialized, messages, *, run_id, **kwargs):
        self._record("chat_model_start", run_id, messages, **kwargs)

    def on_llm_end(self, response, *, run_id, **kwargs):
        self._record("llm_end", run_id, response, **kwargs)

    def on_llm_error(self, error, *, run_id, **kwargs):
        self._record("llm_error", run_id, error, **kwargs)

    def on_custom_event(self, name, data, *, run_id, **kwargs):
        self._record("custom_event", run_id, name, data, **kwargs)

    def on_retry(self, retry_state, *, run_id, **kwargs):
        self._record("retry", run_id, retry_state, **kwargs)

    def provider_calls(self) -> set[UUID]:
        """The runs of the `ChatOpenAI` calls themselves (LangChain reports those)."""
        return {
            run
            for run, name in self.names.items()
            if name.startswith(("moa_reference:", "moa_aggregator:"))
        }

    def own(self) -> list[tuple[UUID, str, str]]:
        calls = self.provider_calls()
        return [event for event in self.events if event[0] not in calls]


def test_callback_events_of_the_graphs_own_runs_carry_no_key(stub):
    stub.configure({"alpha": ECHOING_401, "boss": ECHOING_401})
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    recorder = Recorder()
    with pytest.raises(MoAAggregatorError):
        graph.invoke(QUESTION, {"callbacks": [recorder]})

    own = recorder.own()
    assert {"chain_error", "chain_end"} <= {event for _, event, _ in own}
    for _, _, text in own:
        _assert_keyless(text)
    # LangChain itself reports the provider's exception on the model call's own run.
    provider_errors = [text for run, event, text in recorder.events if event == "llm_error"]
    assert len(provider_errors) == 2 and all(KEY in text for text in provider_errors)


@MODES
def test_the_chat_models_error_and_its_own_run_carry_no_key(stub, mode):
    stub.configure({"alpha": ECHOING_401, "boss": ECHOING_401})
    model = MoAChatModel(preset="demo", config=_config(stub.url))
    recorder = Recorder()
    with pytest.raises(MoAAggregatorError) as info:
        _run(model, mode, "What is 17 * 23?", {"callbacks": [recorder]})

    _assert_keyless(_error_texts(info.value))
    own = recorder.own()
    assert "llm_error" in {event for _, event, _ in own}  # MoAChatModel's own run failed
    for _, _, text in own:
        _assert_keyless(text)


SLASHED_KEY = "sk-SENTINEL/7f3a+9c2e41b8d6f05e"


@pytest.mark.parametrize(
    "echoed",
    [
        SLASHED_KEY,
        quote(SLASHED_KEY, safe=""),  # in a URL
        quote_plus(SLASHED_KEY),  # in a form body
        SLASHED_KEY.replace("/", "\\/"),  # JSON with escaped slashes
    ],
)
def test_scrub_secrets_catches_the_forms_an_error_echoes_a_key_in(monkeypatch, echoed):
    # Read with a trailing newline (a key file), and a second key that is a prefix of it.
    monkeypatch.setattr(providers, "_seen_secrets", {SLASHED_KEY + "\n", SLASHED_KEY[:14]})
    assert scrub_secrets(f"rejected {echoed} here") == "rejected *** here"

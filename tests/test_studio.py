"""The Studio graph: presets chosen per run through `MoAContext`, served by a real `langgraph dev`.

The first tests build the graph in process with fake models. The rest drive one
`moa-graph dev` server (that is `langgraph dev --no-browser --no-reload` in the repository
root) through the `langgraph-sdk` client, with every model served by a `StubServer`. The
server's config comes from `$MOA_GRAPH_CONFIG` when it starts; what a caller sends can only
choose one of its presets (the attack tests send a config of their own and check that
nothing of it is loaded).
"""

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from langchain_core.messages import HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph_sdk import get_sync_client

from moa_graph import ConfigError, MoAContext, build_studio_graph
from moa_graph.prompts import GUIDANCE_TITLE
from moa_graph.testing import StubServer
from tests.fakes import FakeChatModel, FakeModels, tool_call

ROOT = Path(__file__).resolve().parent.parent
NODES = {
    "__start__",
    "fan_out",
    "reference",
    "join",
    "judge",
    "aggregator",
    "tools",
    "__end__",
}
SERVER_START_TIMEOUT_S = 120
SENTINEL_VAR = "MOA_TEST_SERVER_SECRET"
"""An environment variable of the server only: a caller's config must never make it send it."""
SENTINEL = secrets.token_hex(16)


def _preset(refs, aggregator, *, provider="fake", tools=None) -> dict:
    preset = {
        "reference_models": [{"provider": provider, "model": m} for m in refs],
        "aggregator": {"provider": provider, "model": aggregator},
    }
    return preset if tools is None else {**preset, "tools": tools}


def _write_config(path: Path, presets: dict, **top) -> Path:
    path.write_text(yaml.safe_dump({"moa": {**top, "presets": presets}}), encoding="utf-8")
    return path


def _ask(question: str) -> dict:
    return {"messages": [HumanMessage(question)]}


# -- in process ------------------------------------------------------------------------------


def test_langgraph_json_serves_the_studio_module_as_moa():
    manifest = json.loads((ROOT / "langgraph.json").read_text(encoding="utf-8"))
    assert manifest["$schema"] == "https://langgra.ph/schema.json"
    assert manifest["dependencies"] == ["."]
    assert manifest["graphs"] == {"moa": "./moa_graph/studio.py:graph"}
    assert manifest["env"] == ".env"


def test_the_exported_graph_has_no_checkpointer_and_explains_its_context():
    from moa_graph.studio import moa

    assert moa.checkpointer is None  # the dev server brings its own
    assert set(moa.get_graph().nodes) == NODES
    fields = moa.get_context_jsonschema()["properties"]
    # A run names a preset and whether to consult its references, never a file.
    assert set(fields) == {"preset", "references"}
    assert "server's MoA presets" in fields["preset"]["description"]
    assert "on (always) or off" in fields["references"]["description"]
    assert "default_preset" in fields["preset"]["description"]
    assert list(moa.get_input_jsonschema()["properties"]) == ["messages"]


def test_the_served_factory_refuses_a_run_context_that_sets_config_path():
    from langgraph.store.memory import InMemoryStore
    from langgraph_sdk.runtime import _ExecutionRuntime, _ReadRuntime

    from moa_graph.studio import graph, moa

    def run(context):
        return _ExecutionRuntime(
            access_context="threads.create_run", store=InMemoryStore(), context=context
        )

    with pytest.raises(ConfigError, match="run context: 'config_path' is not accepted"):
        graph(run({"preset": "p", "config_path": "/tmp/evil.yaml"}))
    # Other keys may sit beside the preset: LangGraph's own, a RemoteGraph caller's, the
    # caller's own (`user_id`), and an old assistant's empty `config_path`.
    assert graph(run({"preset": "p", "checkpoint_id": "1", "thread_id": "t"})) is moa
    assert graph(run({"preset": "p", "run_id": "r", "user_id": "u", "config_path": ""})) is moa
    assert graph(run(None)) is moa
    assert graph(_ReadRuntime(access_context="assistants.read", store=InMemoryStore())) is moa


def test_a_preset_that_is_not_a_name_is_refused():
    with pytest.raises(ConfigError, match="run context: 'preset' must be a preset name, not int"):
        MoAContext.coerce({"preset": 5})


async def test_each_run_uses_the_preset_its_context_names(tmp_path, monkeypatch):
    config = _write_config(
        tmp_path / "moa.yaml",
        {"solo": _preset(["a"], "agg1"), "duo": _preset(["b", "c"], "agg2")},
        default_preset="solo",
    )
    monkeypatch.setenv("MOA_GRAPH_CONFIG", str(config))  # the server's config, by discovery
    graph = build_studio_graph(model_factory=FakeModels()).compile()

    default = graph.invoke(_ask("q"))
    chosen = await graph.ainvoke(_ask("q"), context=MoAContext(preset="duo"))
    as_dict = graph.invoke(_ask("q"), context={"preset": "duo"})

    assert [r["label"] for r in default["references"]] == ["fake:a"]
    assert default["messages"][-1].content == "agg1 answers"
    assert [r["label"] for r in chosen["references"]] == ["fake:b", "fake:c"]
    assert chosen["messages"][-1].content == "agg2 answers"
    assert as_dict["messages"][-1].content == "agg2 answers"


def test_a_config_given_to_the_builder_is_the_one_every_run_uses(tmp_path):
    given = {"moa": {"presets": {"p": _preset(["a"], "agg1")}}}
    graph = build_studio_graph(config=given, model_factory=FakeModels()).compile()
    assert graph.invoke(_ask("q"), context=MoAContext(preset="p"))["messages"][-1].content == (
        "agg1 answers"
    )


def test_a_parent_graph_without_a_context_schema_passes_the_context_on(tmp_path):
    config = _write_config(
        tmp_path / "moa.yaml", {"solo": _preset(["a"], "agg1"), "duo": _preset(["b"], "agg2")}
    )
    parent = StateGraph(MessagesState)
    parent.add_node("moa", build_studio_graph(config=config, model_factory=FakeModels()).compile())
    parent.add_edge(START, "moa")

    result = parent.compile().invoke(_ask("q"), context={"preset": "duo"})  # stays a dict

    assert result["messages"][-1].content == "agg2 answers"


def test_a_context_naming_a_config_file_is_refused_naming_the_key(tmp_path):
    server_config = _write_config(tmp_path / "moa.yaml", {"p": _preset(["a"], "agg")})
    evil = _write_config(tmp_path / "evil.yaml", {"p": _preset(["a"], "evil_agg")})
    models = FakeModels()
    parent = StateGraph(MessagesState)
    parent.add_node("moa", build_studio_graph(config=server_config, model_factory=models).compile())
    parent.add_edge(START, "moa")

    with pytest.raises(ConfigError, match="run context: 'config_path' is not accepted"):
        parent.compile().invoke(_ask("q"), context={"config_path": str(evil)})
    assert "fake:evil_agg" not in models.built


def test_an_edited_config_is_read_again_by_the_same_graph(tmp_path):
    path = tmp_path / "moa.yaml"
    _write_config(path, {"p": _preset(["a"], "agg1")})
    graph = build_studio_graph(config=path, model_factory=FakeModels()).compile()
    assert graph.invoke(_ask("q"))["messages"][-1].content == "agg1 answers"

    _write_config(path, {"p": _preset(["a"], "agg2")})
    later = path.stat().st_mtime_ns + 1_000_000_000  # a distinct stamp on coarse clocks too
    os.utime(path, ns=(later, later))
    assert graph.invoke(_ask("q"))["messages"][-1].content == "agg2 answers"


def test_a_preset_the_config_lacks_is_a_config_error_listing_the_presets(tmp_path):
    path = _write_config(tmp_path / "moa.yaml", {"p": _preset(["a"], "agg")})
    graph = build_studio_graph(config=path, model_factory=FakeModels()).compile()
    with pytest.raises(ConfigError, match="MoA preset 'nope' not found; available presets: p"):
        graph.invoke(_ask("q"), context=MoAContext(preset="nope"))


async def test_the_tools_node_runs_the_tools_of_the_runs_preset(tmp_path):
    path = _write_config(
        tmp_path / "moa.yaml",
        {
            "calc": _preset(["a"], "agg_calc"),
            "bare": _preset(["a"], "agg_bare", tools=[]),
        },
        tools=["moa_graph.tools:calculator"],
    )
    calls = [tool_call("calculator", {"expression": "17 * 23"}), "done"]
    models = FakeModels(
        agg_calc=FakeChatModel(script=list(calls)), agg_bare=FakeChatModel(script=list(calls))
    )
    graph = build_studio_graph(config=path, model_factory=models).compile()

    calc = await graph.ainvoke(_ask("What is 17 * 23?"), context=MoAContext(preset="calc"))
    bare = graph.invoke(_ask("What is 17 * 23?"), context=MoAContext(preset="bare"))

    assert [t["function"]["name"] for t in models["agg_calc"].calls[0].tools] == ["calculator"]
    assert calc["messages"][2].content == "391"
    assert models["agg_bare"].calls[0].tools == []
    refused = bare["messages"][2]
    assert refused.status == "error"
    assert refused.content == "Error: calculator is not a valid tool, try one of []."


def test_dev_without_a_config_is_one_error_line_and_starts_no_server(tmp_path):
    unset = ("MOA_GRAPH_CONFIG", "XDG_CONFIG_HOME")
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "moa_graph.cli", "dev", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "moa-graph: error: no MoA config found: set $MOA_GRAPH_CONFIG, or create ./moa.yaml "
        f"or {tmp_path}/.config/moa-graph/config.yaml"
    ]


# -- through `langgraph dev` -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stub():
    server = StubServer()
    url = server.start()
    try:
        yield server, url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def studio_dir(tmp_path_factory):
    """The server's folder: its config, its log, and a directory on its `PYTHONPATH`."""
    folder = tmp_path_factory.mktemp("studio")
    (folder / "importable").mkdir()
    return folder


@pytest.fixture(scope="module")
def studio(stub, studio_dir):
    """A `moa-graph dev` server in the repository root; stopped whatever happens."""
    _, stub_url = stub
    config = _write_config(
        studio_dir / "moa.yaml",
        {
            "demo": _preset(["analyst", "skeptic", "builder"], "aggregator", provider="stub"),
            "duo": _preset(["alpha", "beta"], "boss", provider="stub"),
        },
        default_preset="demo",
        providers={"stub": {"base_url": stub_url}},
        tools=["moa_graph.tools:calculator"],
    )
    log_path = studio_dir / "server.log"
    port = _free_port()
    env = {
        **os.environ,
        "MOA_GRAPH_CONFIG": str(config),
        SENTINEL_VAR: SENTINEL,
        # The worst case for the attack tests: a caller's module would be importable.
        "PYTHONPATH": os.pathsep.join([str(studio_dir / "importable"), str(ROOT)]),
    }
    command = [sys.executable, "-m", "moa_graph.cli", "dev", "--no-reload", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so one signal stops it all
        )
    try:
        url = _wait_until_ready(process, port, log_path)
        client = get_sync_client(url=url, api_key=None)
        # The server's own assistant (a developer's persisted ones may sit beside it).
        (assistant,) = client.assistants.search(graph_id="moa", metadata={"created_by": "system"})
        yield client, assistant["assistant_id"]
    finally:
        _stop(process)


class _Listener:
    """A loopback HTTP endpoint that records every request and answers 401."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                listener.requests.append(f"{self.path}\n{self.headers}\n{body}")
                self.send_response(401)
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    endpoint = _Listener()
    try:
        yield endpoint
    finally:
        endpoint.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(process: subprocess.Popen, port: int, log_path: Path) -> str:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        # langgraph dev moves to another port when the one asked for was taken meanwhile.
        moved = re.search(r"using port (\d+) instead", log_path.read_text(errors="replace"))
        url = f"http://127.0.0.1:{moved.group(1) if moved else port}"
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
                if response.status == 200:
                    return url
        except OSError:
            time.sleep(0.25)
    _stop(process)
    pytest.fail(
        f"langgraph dev was not ready in {SERVER_START_TIMEOUT_S}s (exit {process.poll()}); "
        f"its log:\n{log_path.read_text(errors='replace')}"
    )


def _stop(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def _guidance(request: dict) -> str:
    (text,) = [
        m["content"]
        for m in request["messages"]
        if m["role"] == "user" and str(m["content"]).startswith(GUIDANCE_TITLE)
    ]
    return text


def test_the_server_lists_the_moa_graph_and_its_context_fields(studio):
    client, assistant = studio
    graph = client.assistants.get_graph(assistant)
    assert {node["id"] for node in graph["nodes"]} == NODES
    edges = {(e["source"], e["target"], e.get("conditional", False)) for e in graph["edges"]}
    assert {
        ("fan_out", "reference", True),
        ("reference", "join", False),
        ("join", "aggregator", True),
        ("join", "reference", True),
        ("aggregator", "tools", True),
        ("tools", "aggregator", True),
        ("tools", "fan_out", True),
    } <= edges
    schemas = client.assistants.get_schemas(assistant)
    context = schemas["context_schema"]["properties"]
    assert set(context) == {"preset", "references"}
    assert all(field["description"] for field in context.values())
    assert "messages" in schemas["input_schema"]["properties"]


def test_a_streamed_run_shows_progress_and_ends_with_the_tool_answer(studio, stub):
    client, assistant = studio
    server, _ = stub
    server.reset()
    thread = client.threads.create()["thread_id"]
    parts = list(
        client.runs.stream(
            thread,
            assistant,
            input={"messages": [{"role": "user", "content": "What is 17 * 23?"}]},
            stream_mode=["updates", "custom"],
        )
    )

    custom = [p.data for p in parts if p.event == "custom"]
    done = {e["label"] for e in custom if e["type"] == "moa_reference" and e["status"] == "ok"}
    assert done == {"stub:analyst", "stub:skeptic", "stub:builder"}
    assert any(e["type"] == "moa_aggregator" for e in custom)
    updated = [node for p in parts if p.event == "updates" for node in p.data]
    assert {"fan_out", "reference", "join", "aggregator", "tools"} <= set(updated)
    messages = client.threads.get_state(thread)["values"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[2]["content"] == "391"
    assert "391" in messages[-1]["content"]
    assert server.stats() == {"analyst": 1, "skeptic": 1, "builder": 1, "aggregator": 2}


def test_a_run_paused_before_the_aggregator_resumes_with_edited_references(studio, stub):
    client, assistant = studio
    server, _ = stub
    server.reset()
    thread = client.threads.create()["thread_id"]
    question = {"messages": [{"role": "user", "content": "Compare two cache designs."}]}

    client.runs.wait(thread, assistant, input=question, interrupt_before=["aggregator"])
    paused = client.threads.get_state(thread)
    assert paused["next"] == ["aggregator"]
    labels = [r["label"] for r in paused["values"]["references"]]
    assert labels == ["stub:analyst", "stub:skeptic", "stub:builder"]
    assert "aggregator" not in server.stats()

    # A person drops the skeptic's answer, then lets the aggregator run.
    kept = [r for r in paused["values"]["references"] if r["label"] != "stub:skeptic"]
    client.threads.update_state(thread, {"references": kept})
    client.runs.wait(thread, assistant, input=None)
    (request,) = server.requests("aggregator")
    guidance = _guidance(request)
    assert "stub:analyst" in guidance and "stub:builder" in guidance
    assert "stub:skeptic" not in guidance

    # Forking from the paused checkpoint runs the aggregator on the original references.
    history = client.threads.get_history(thread, limit=20)
    (original,) = [
        h
        for h in history
        if h["next"] == ["aggregator"] and len(h["values"].get("references", [])) == 3
    ]
    client.runs.wait(
        thread, assistant, input=None, checkpoint_id=original["checkpoint"]["checkpoint_id"]
    )
    assert "stub:skeptic" in _guidance(server.requests("aggregator")[-1])


def test_a_preset_chosen_through_context_changes_the_models_called(studio, stub):
    client, assistant = studio
    server, _ = stub
    server.reset()
    question = {"messages": [{"role": "user", "content": "Hello there."}]}

    result = client.runs.wait(None, assistant, input=question, context={"preset": "duo"})

    assert [r["label"] for r in result["references"]] == ["stub:alpha", "stub:beta"]
    assert server.stats() == {"alpha": 1, "beta": 1, "boss": 1}
    public = {"messages", "references", "judgement", "usage"}
    assert set(result) == public, "no private keys over HTTP"


def test_a_run_sent_as_configurable_with_other_keys_runs_its_preset(studio, stub):
    # How RemoteGraph and older clients send a run: the server copies `configurable` into
    # the context, keys of other parties included.
    client, assistant = studio
    server, _ = stub
    server.reset()
    question = {"messages": [{"role": "user", "content": "Hello there."}]}
    configurable = {"preset": "duo", "user_id": "u1", "run_id": "r1", "config_path": ""}

    result = client.runs.wait(
        None, assistant, input=question, config={"configurable": configurable}
    )

    assert [r["label"] for r in result["references"]] == ["stub:alpha", "stub:beta"]


def test_an_unknown_preset_is_an_error_listing_the_servers_presets(studio):
    client, assistant = studio
    question = {"messages": [{"role": "user", "content": "Hello there."}]}
    with pytest.raises(
        Exception, match=r"MoA preset 'nope' not found; available presets: demo, duo"
    ):
        client.runs.wait(None, assistant, input=question, context={"preset": "nope"})


@pytest.mark.parametrize("sent_as", ["context", "configurable", "assistant"])
def test_a_callers_config_file_is_never_loaded(studio, studio_dir, listener, sent_as, tmp_path):
    client, assistant = studio
    # The caller's module would write a marker when imported, and its provider would send
    # the server's secret to the caller's endpoint as the API key.
    marker = tmp_path / "imported.marker"
    module = f"caller_tool_{secrets.token_hex(4)}"
    (studio_dir / "importable" / f"{module}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "def evil(x: str) -> str:\n"
        '    """Evil."""\n'
        "    return x\n",
        encoding="utf-8",
    )
    evil_model = {"provider": "evil", "model": "m", "max_retries": 0, "timeout": 5}
    evil = _write_config(
        tmp_path / "evil.yaml",
        {"demo": {"reference_models": [evil_model], "aggregator": evil_model}},
        providers={"evil": {"base_url": listener.url, "api_key_env": SENTINEL_VAR}},
        tools=[f"{module}:evil"],
    )
    question = {"messages": [{"role": "user", "content": "Hello there."}]}
    sent = {"config_path": str(evil)}
    if sent_as == "context":
        run = {"assistant_id": assistant, "context": sent}
    elif sent_as == "configurable":
        run = {"assistant_id": assistant, "config": {"configurable": sent}}
    else:
        created = client.assistants.create("moa", context=sent)["assistant_id"]
        run = {"assistant_id": created}

    try:
        with pytest.raises(
            Exception, match=r"run context: 'config_path' is not accepted"
        ) as refused:
            client.runs.wait(None, input=question, **run)
    finally:
        if sent_as == "assistant":
            client.assistants.delete(run["assistant_id"])

    assert not marker.exists()
    assert listener.requests == []
    assert SENTINEL not in str(refused.value)
    assert SENTINEL not in (studio_dir / "server.log").read_text(errors="replace")

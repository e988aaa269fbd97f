"""The `moa-graph` command, run as a real process."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

import pytest

from tests.workers.stub import StubProcess

CONFIG = """\
moa:
  default_preset: review
  presets:
    review:
      reference_models:
        - {provider: openai, model: gpt-5.5}
        - {provider: groq, model: llama-4}
      aggregator: {provider: openrouter, model: anthropic/claude-opus-4.8}
    local:
      enabled: false
      reference_models:
        - {provider: ollama, model: qwen3}
      aggregator: {provider: ollama, model: qwen3}
"""


_STATE = tempfile.mkdtemp(prefix="moa-cli-state-")


def _cli_env(env: dict | None) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    base.pop("MOA_GRAPH_CONFIG", None)
    base.pop("MOA_GRAPH_CHECKPOINT_URL", None)
    base["XDG_STATE_HOME"] = _STATE  # never the developer's own thread store
    return base | (env or {})


def _cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moa_graph.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_cli_env(env),
        cwd=cwd,
    )


def _cli_started(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "moa_graph.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(None),
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("moa-graph: error: ")
    return lines[0]


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "moa.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_offline_run_answers_391_after_a_real_tool_round_trip():
    result = _cli("run", "--offline", "What is 17 * 23?")
    assert result.returncode == 0, result.stderr
    assert "391" in result.stdout
    # The live view on stderr showed each reference, the tool call and its result.
    for label in ("stub:analyst", "stub:skeptic", "stub:builder"):
        assert label in result.stderr
    assert "calculator(expression='17 * 23')" in result.stderr
    assert "← 391" in result.stderr
    # The closing summary: 3 references + 2 aggregator steps, tokens, wall time.
    assert "5 calls," in result.stderr and "output tokens" in result.stderr


def test_offline_run_as_json_reports_references_and_the_tool_call():
    result = _cli("run", "--offline", "--json", "What is 17 * 23?")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "391" in summary["answer"]
    assert [r["status"] for r in summary["references"]] == ["ok", "ok", "ok"]
    assert [r["label"] for r in summary["references"]] == [
        "stub:analyst",
        "stub:skeptic",
        "stub:builder",
    ]
    assert summary["tool_calls"] == [
        {"name": "calculator", "args": {"expression": "17 * 23"}, "result": "391"}
    ]
    assert summary["usage"]["total"]["calls"] == 5
    assert summary["usage"]["models"]["aggregator stub:aggregator"]["calls"] == 2
    assert summary["wall_s"] > 0


def test_a_missing_key_is_one_line_naming_the_variable(config_file):
    line = _one_error_line(_cli("run", "hi", "--config", str(config_file)))
    assert "OPENAI_API_KEY is not set" in line
    assert "--offline" in line


def test_no_config_at_all_suggests_offline(tmp_path):
    line = _one_error_line(_cli("run", "hi", env={"HOME": str(tmp_path)}, cwd=tmp_path))
    assert "no MoA config found" in line and "--offline" in line


def test_presets_lists_presets_and_models(config_file):
    result = _cli("presets", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    for text in ("review (default)", "openai:gpt-5.5", "groq:llama-4", "local", "no"):
        assert text in result.stdout


def test_presets_with_a_bad_config_prints_the_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent("""\
            moa:
              presets:
                review:
                  reference_models: [{provider: openai, model: a}]
                  aggregator: {provider: openai}
            """),
        encoding="utf-8",
    )
    line = _one_error_line(_cli("presets", "--config", str(path)))
    assert line == f"moa-graph: error: {path}: moa.presets.review.aggregator: 'model' is required"


def test_an_unknown_preset_is_one_line(config_file):
    line = _one_error_line(_cli("graph", "--config", str(config_file), "--preset", "nope"))
    assert "MoA preset 'nope' not found; available presets: review, local" in line


def test_bad_arguments_are_one_line():
    line = _one_error_line(_cli("run"))
    assert "question" in line


def test_graph_prints_mermaid_with_the_five_nodes(config_file):
    result = _cli("graph", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.lstrip().startswith("---") or "graph TD" in result.stdout
    for edge in (
        "__start__ --> fan_out",
        "fan_out -.-> reference",
        "fan_out -.-> aggregator",
        "reference --> join",
        "join -.-> aggregator",
        "join -.-> reference",  # the next layer of a multi-layer preset
        "aggregator -.-> tools",
        "tools -.-> aggregator",
        "tools -.-> fan_out",  # fan-out schedules that re-run references mid-turn
    ):
        assert edge in result.stdout


def test_stub_server_command_serves_until_stopped():
    process = subprocess.Popen(
        [sys.executable, "-m", "moa_graph.cli", "stub-server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(f"{url}/models", timeout=10) as response:
            models = json.load(response)
        assert {"analyst", "aggregator"} <= {m["id"] for m in models["data"]}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert "Traceback" not in process.stderr.read()


def test_dev_reports_a_broken_config_before_starting_the_server(tmp_path):
    # The server itself is started by tests/test_studio.py; here it must never start.
    absent = tmp_path / "absent.yaml"
    line = _one_error_line(_cli("dev", "--config", str(absent), "--port", "1"))
    assert line == f"moa-graph: error: {absent}: config file not found"


def test_a_thread_continues_across_runs_on_each_store(store):
    first = _cli("run", "--offline", "--json", "--checkpoint-url", store.url, "What is 17 * 23?")
    assert first.returncode == 0, first.stderr
    thread = json.loads(first.stdout)["thread_id"]
    second = _cli(
        "run",
        "--offline",
        "--json",
        "--checkpoint-url",
        store.url,
        "--thread",
        thread,
        "And what is 6 * 7?",
    )
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["thread_id"] == thread
    assert "42" in summary["answer"]
    assert [c["result"] for c in summary["tool_calls"]] == ["42"]  # this turn's only

    listed = _cli("threads", "--checkpoint-url", store.url)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if thread in line]
    _, _, _, turns, first_question = row.split(maxsplit=4)
    assert turns == "2"  # two user turns
    assert first_question == "What is 17 * 23?"  # the first one, not the last


def test_without_a_thread_a_new_one_is_started_and_named(tmp_path):
    state = {"XDG_STATE_HOME": str(tmp_path)}
    result = _cli("run", "--offline", "What is 17 * 23?", env=state)
    assert result.returncode == 0, result.stderr
    thread = result.stderr.split("new thread ", 1)[1].split()[0]
    assert (tmp_path / "moa-graph" / "threads.sqlite").is_file()
    assert thread in _cli("threads", env=state).stdout


def test_a_failed_aggregator_turn_is_saved_and_resumed(stub, tmp_path):
    config = tmp_path / "moa.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            moa:
              providers: {{stub: {{base_url: "{stub.url}"}}}}
              presets:
                demo:
                  reference_models: [{{provider: stub, model: alpha}}]
                  aggregator: {{provider: stub, model: boss, max_retries: 0}}
            """),
        encoding="utf-8",
    )
    stub.configure({"boss": {"fault": {"kind": "status", "status": 503, "times": 1}}})
    state = {"XDG_STATE_HOME": str(tmp_path)}
    args = ("run", "--config", str(config), "--thread", "t-resume")

    line = _one_error_line(_cli(*args, "--new-thread", "--json", "What is 17 * 23?", env=state))
    assert "aggregator stub:boss failed" in line and "--thread t-resume --resume" in line

    resumed = _cli(*args, "--resume", "--json", env=state)
    assert resumed.returncode == 0, resumed.stderr
    assert "391" in json.loads(resumed.stdout)["answer"]
    assert stub.stats()["alpha"] == 1  # the references' work was kept, not redone


def test_an_unreachable_store_is_one_line_without_the_password():
    line = _one_error_line(
        _cli("threads", "--checkpoint-url", "postgresql://moa:hunter2@127.0.0.1:1/moa")
    )
    assert "cannot open checkpoint database postgresql://moa:***@127.0.0.1:1/moa" in line
    assert "hunter2" not in line


def _stub_config(stub, tmp_path, **aggregator) -> str:
    """A config file for the stand-in's preset `demo`: references alpha and beta, aggregator
    boss (with `aggregator` options)."""
    options = "".join(f", {key}: {value}" for key, value in aggregator.items())
    config = tmp_path / "moa.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            moa:
              providers: {{stub: {{base_url: "{stub.url}"}}}}
              presets:
                demo:
                  reference_models:
                    - {{provider: stub, model: alpha, max_retries: 0}}
                    - {{provider: stub, model: beta, max_retries: 0}}
                  aggregator: {{provider: stub, model: boss{options}}}
            """),
        encoding="utf-8",
    )
    return str(config)


def test_a_second_run_on_a_busy_thread_is_one_line_and_pays_for_nothing(store, tmp_path):
    # beta's answer waits while the stand-in is frozen: the winner is mid-turn for as long
    # as the refused runs take to start, however loaded the machine.
    stand_in = StubProcess({"beta": {"latency": 1}})
    try:
        run = ("run", "--json", "--config", _stub_config(stand_in, tmp_path))
        run += ("--checkpoint-url", store.url, "--thread", "t-busy")
        ask = (*run, "--new-thread", "Name a river.")
        both = [_cli_started(*ask), _cli_started(*ask)]
        deadline = time.monotonic() + 60
        while stand_in.stats().get("beta") != 1:  # the winner holds the thread
            assert time.monotonic() < deadline and any(p.poll() is None for p in both)
            time.sleep(0.05)
        stand_in.freeze()
        try:
            while all(p.poll() is None for p in both):  # the loser leaves at once
                assert time.monotonic() < deadline
                time.sleep(0.05)
            (loser,) = [p for p in both if p.poll() is not None]
            (winner,) = [p for p in both if p is not loser]
            resume = _cli(*run, "--resume")
            assert winner.poll() is None, "the turn ended before the second runs were refused"
        finally:
            stand_in.thaw()
        winner_out, winner_err = winner.communicate(timeout=60)
        stats = stand_in.stats()
    finally:
        stand_in.stop()

    for refused in (
        subprocess.CompletedProcess([], loser.returncode, "", loser.stderr.read()),
        resume,
    ):
        assert _one_error_line(refused) == (
            "moa-graph: error: thread t-busy is busy: another run is on it; try again later"
        )
        assert refused.returncode == 75
    assert winner.returncode == 0, winner_err
    assert "weighing 2 reference answers" in json.loads(winner_out)["answer"]
    assert stats == {"alpha": 1, "beta": 1, "boss": 1}


def test_a_new_question_after_an_unfinished_turn_is_refused_with_the_resume_hint(
    store, stub, tmp_path
):
    stub.configure({"boss": {"fault": {"kind": "status", "status": 500, "times": 1}}})
    run = ("run", "--json", "--config", _stub_config(stub, tmp_path, max_retries=0))
    run += ("--checkpoint-url", store.url, "--thread", "t-unfinished")
    first = _cli(*run, "--new-thread", "Name a river.")
    assert "aggregator stub:boss failed" in _one_error_line(first)
    asked = stub.stats()

    line = _one_error_line(_cli(*run, "And a mountain?"))
    assert line == (
        "moa-graph: error: thread t-unfinished's last turn is unfinished (stopped before "
        "aggregator): finish it with --thread t-unfinished --resume, or ask on a new thread"
    )
    assert stub.stats() == asked  # no model was asked

    resumed = _cli(*run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "Name a river." in json.loads(resumed.stdout)["answer"]
    )  # the question refused was not kept


def test_resume_on_a_thread_with_nothing_unfinished_is_one_line(stub, tmp_path):
    run = ("run", "--json", "--config", _stub_config(stub, tmp_path), "--thread", "t-done")
    state = {"XDG_STATE_HOME": str(tmp_path)}
    assert _cli(*run, "--new-thread", "Name a river.", env=state).returncode == 0
    resumed = _cli(*run, "--resume", env=state)
    line = _one_error_line(resumed)
    assert line == "moa-graph: error: thread t-done has no unfinished turn to resume"
    assert resumed.returncode == 2
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 1}

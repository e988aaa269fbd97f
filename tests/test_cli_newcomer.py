"""The newcomer's path through the `moa-graph` command, run as a real process: `init`, the
question's sources, the thread mistakes, Ctrl-C, `--verbose` and what a failure says."""

import json
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from moa_graph.config import load_config
from moa_graph.persistence import open_sync_checkpointer
from moa_graph.providers import missing_api_keys
from moa_graph.starter import STARTER_KEY_VARS
from tests.test_cli import _cli, _cli_env, _one_error_line


def _stub_config(stub, tmp_path, *, beta: str = "") -> str:
    """Preset `demo` on the stand-in: references alpha and beta (`beta` options), aggregator
    boss; no retries, so that a fault is one request."""
    config = tmp_path / "moa.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            moa:
              providers: {{stub: {{base_url: "{stub.url}"}}}}
              presets:
                demo:
                  reference_models:
                    - {{provider: stub, model: alpha, max_retries: 0}}
                    - {{provider: stub, model: beta, max_retries: 0{beta}}}
                  aggregator: {{provider: stub, model: boss, max_retries: 0}}
            """),
        encoding="utf-8",
    )
    return str(config)


def _state(tmp_path) -> dict:
    return {"XDG_STATE_HOME": str(tmp_path / "state")}


WIDE = {"COLUMNS": "200"}
"""A terminal wide enough that no row of the references' table wraps."""


# -- init -------------------------------------------------------------------------------------


def test_init_writes_a_starter_that_loads_with_a_review_and_an_offline_preset(
    tmp_path, monkeypatch
):
    result = _cli("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "moa.yaml")
    assert list(config.presets) == ["review", "offline"]
    assert config.default_preset == "review"
    # The output names exactly the variables the review preset reads its keys from.
    for name in STARTER_KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    review = config.preset("review")
    specs = [*review.reference_models, review.aggregator]
    assert missing_api_keys(specs, config.providers) == list(STARTER_KEY_VARS)
    for name in STARTER_KEY_VARS:
        assert f"export {name}=..." in result.stdout
    assert 'moa-graph run --preset offline "What is 17 * 23?"' in result.stdout
    assert "moa-graph stub-server" in result.stdout


def test_the_starters_offline_preset_answers_on_the_stand_in(stub, tmp_path):
    assert _cli("init", cwd=tmp_path).returncode == 0
    path = tmp_path / "moa.yaml"
    # The preset points at `moa-graph stub-server`'s default port; this stand-in has its own.
    path.write_text(
        path.read_text().replace("http://127.0.0.1:8765/v1", stub.url), encoding="utf-8"
    )
    result = _cli(
        "run",
        "--json",
        "--preset",
        "offline",
        "What is 17 * 23?",
        cwd=tmp_path,
        env=_state(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "391" in json.loads(result.stdout)["answer"]
    assert {"analyst", "skeptic", "builder", "aggregator"} <= set(stub.stats())


def test_init_refuses_to_overwrite_a_file_unless_forced(tmp_path):
    path = tmp_path / "moa.yaml"
    path.write_text("# mine\n", encoding="utf-8")
    refused = _cli("init", cwd=tmp_path)
    line = _one_error_line(refused)
    assert line == "moa-graph: error: moa.yaml already exists: pass --force to overwrite it"
    assert refused.returncode == 2
    assert path.read_text() == "# mine\n"

    forced = _cli("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert load_config(path).default_preset == "review"


def test_init_at_another_path_names_it_in_the_commands_it_prints(tmp_path):
    result = _cli("init", "conf/team.yaml", cwd=tmp_path)
    line = _one_error_line(result)  # conf/ does not exist
    assert line == "moa-graph: error: cannot write conf/team.yaml: No such file or directory"

    (tmp_path / "conf").mkdir()
    result = _cli("init", "conf/team.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "moa-graph run --config conf/team.yaml --preset offline" in result.stdout
    assert load_config(tmp_path / "conf" / "team.yaml").preset("offline")


def test_run_offline_needs_no_config_file(tmp_path):
    empty = {"HOME": str(tmp_path), **_state(tmp_path)}
    result = _cli("run", "--offline", "--json", "What is 17 * 23?", cwd=tmp_path, env=empty)
    assert result.returncode == 0, result.stderr
    assert "391" in json.loads(result.stdout)["answer"]


# -- the question -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "stdin", "line"),
    [
        (("",), None, "the question is empty"),
        (("  \n\t",), None, "the question is empty"),
        (("-",), " \n\n ", "the question is empty (stdin)"),
        (("--file", "{blank}"), None, "the question is empty (--file {blank})"),
    ],
    ids=["empty", "blank", "blank stdin", "blank file"],
)
def test_an_empty_question_is_one_line_and_asks_no_model(stub, tmp_path, args, stdin, line):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n", encoding="utf-8")
    args = tuple(a.format(blank=blank) for a in args)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "moa_graph.cli",
            "run",
            "--config",
            _stub_config(stub, tmp_path),
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=_cli_env(_state(tmp_path)),
    )
    assert _one_error_line(result) == f"moa-graph: error: {line.format(blank=blank)}"
    assert result.returncode == 2
    assert stub.stats() == {}


@pytest.mark.parametrize("source", ["stdin", "file"])
def test_a_large_question_from_stdin_or_a_file_is_asked_whole(stub, tmp_path, source):
    # Over 128 KB: more than one command-line argument may hold on Linux.
    question = "Summarise this log.\n" + "".join(f"line {i}: ok\n" for i in range(20_000))
    question += "END-OF-QUESTION"
    assert len(question.encode()) > 128 * 1024
    run = ["run", "--json", "--config", _stub_config(stub, tmp_path)]
    if source == "file":
        path = tmp_path / "question.txt"
        path.write_text(question, encoding="utf-8")
        run += ["--file", str(path)]
    else:
        run += ["-"]
    result = subprocess.run(
        [sys.executable, "-m", "moa_graph.cli", *run],
        input=question if source == "stdin" else None,
        capture_output=True,
        text=True,
        timeout=60,
        env=_cli_env(_state(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    asked = stub.requests("alpha")[0]["messages"][-1]["content"]
    assert asked == question


def test_a_question_given_twice_is_refused(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("Name a river.", encoding="utf-8")
    line = _one_error_line(_cli("run", "--offline", "--file", str(path), "Name a river."))
    assert line == (
        "moa-graph: error: give the question once: as an argument, - for stdin, or --file PATH"
    )


def test_a_missing_question_file_is_one_line(tmp_path):
    absent = tmp_path / "absent.txt"
    line = _one_error_line(_cli("run", "--offline", "--file", str(absent)))
    assert line == f"moa-graph: error: --file {absent}: No such file or directory"


# -- threads ----------------------------------------------------------------------------------


def test_resuming_an_unknown_thread_names_it_and_points_to_the_thread_list(tmp_path):
    result = _cli("run", "--offline", "--thread", "nosuch", "--resume", env=_state(tmp_path))
    assert _one_error_line(result) == (
        "moa-graph: error: thread nosuch not found: see moa-graph threads"
    )
    assert result.returncode == 2


def test_a_question_on_an_unknown_thread_needs_new_thread(stub, tmp_path):
    run = ("run", "--json", "--config", _stub_config(stub, tmp_path), "--thread", "t-typo")
    state = _state(tmp_path)

    refused = _cli(*run, "Name a river.", env=state)
    assert _one_error_line(refused) == (
        "moa-graph: error: thread t-typo not found: see moa-graph threads; to start a thread "
        "named t-typo, add --new-thread"
    )
    assert refused.returncode == 2
    assert stub.stats() == {}  # no model was asked

    started = _cli(*run, "--new-thread", "Name a river.", env=state)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["thread_id"] == "t-typo"

    again = _cli(*run, "--new-thread", "And a mountain?", env=state)
    assert _one_error_line(again) == (
        "moa-graph: error: thread t-typo already exists: continue it without --new-thread"
    )
    continued = _cli(*run, "And a mountain?", env=state)
    assert continued.returncode == 0, continued.stderr


def test_threads_show_each_threads_first_question_on_one_trimmed_line(tmp_path):
    state = _state(tmp_path)
    first = "Which rivers\ncross more than three countries, and which of them is the longest?"
    run = ("run", "--offline", "--json", "--thread", "t-rivers")
    assert _cli(*run, "--new-thread", first, env=state).returncode == 0
    assert _cli(*run, "And the shortest?", env=state).returncode == 0

    listed = _cli("threads", env=state)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("t-rivers ")]
    _, _, _, turns, question = row.split(maxsplit=4)
    assert turns == "2"
    assert question == "Which rivers cross more than three countries, and which of…"


# -- Ctrl-C -----------------------------------------------------------------------------------


def test_ctrl_c_during_a_turn_prints_the_command_that_finishes_it(stub, tmp_path):
    stub.configure({"beta": {"latency": 60}})
    config = _stub_config(stub, tmp_path)
    state = _state(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moa_graph.cli",
            "run",
            "--json",
            "--config",
            config,
            "--thread",
            "t-int",
            "--new-thread",
            "Name a river.",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(state),
    )
    try:
        _wait_for_a_stored_reference(tmp_path / "state" / "moa-graph" / "threads.sqlite", "t-int")
        assert stub.stats().get("beta") == 1  # beta is still answering
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err
    *_, blank, line = err.splitlines()
    assert blank == ""  # past the ^C the terminal echoed
    resume = shlex.join(
        ["moa-graph", "run", "--thread", "t-int", "--resume", "--config", config, "--json"]
    )
    assert line == f"moa-graph: interrupted; the turn is saved: finish it with {resume}"

    stub.configure({"beta": {"latency": 0}})
    finished = _cli(*shlex.split(resume)[1:], env=state)
    assert finished.returncode == 0, finished.stderr
    assert "weighing 2 reference answers" in json.loads(finished.stdout)["answer"]
    assert stub.stats() == {"alpha": 1, "beta": 2, "boss": 1}  # alpha's answer was kept


def _wait_for_a_stored_reference(file, thread: str) -> None:
    """Until the store holds a reference's answer for the thread's current step."""
    deadline = time.monotonic() + 60
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    while time.monotonic() < deadline:
        if file.exists():
            with open_sync_checkpointer(f"sqlite://{file}") as saver:
                stored = saver.get_tuple(config)
            writes = stored.pending_writes or [] if stored else []
            if any(channel == "reference_results" for _, channel, _ in writes):
                return
        time.sleep(0.05)
    raise AssertionError("no reference answer was stored within 60 s")


# -- what a turn shows --------------------------------------------------------------------------


def test_a_failed_references_row_says_why_and_verbose_shows_every_answer(stub, tmp_path):
    stub.configure({"beta": {"fault": {"kind": "status", "status": 500}}})
    run = ("run", "--config", _stub_config(stub, tmp_path), "What is 17 * 23?")

    plain = _cli(*run, env=_state(tmp_path) | WIDE)
    assert plain.returncode == 0, plain.stderr
    (row,) = [line for line in plain.stderr.splitlines() if "stub:beta" in line]
    assert "failed in " in row and "InternalServerError: Error code: 500" in row
    assert "[alpha]" not in plain.stderr  # the answers themselves only with --verbose

    verbose = _cli(*run, "--verbose", env=_state(tmp_path))
    assert verbose.returncode == 0, verbose.stderr
    shown = verbose.stderr.split("aggregator: stub:boss", 1)[1]  # after the table
    alpha = shown.split("── reference 1 stub:alpha: done in ", 1)[1]
    assert alpha.splitlines()[1].startswith('[alpha] Answer to "What is 17 * 23?"')
    beta = shown.split("── reference 2 stub:beta: failed in ", 1)[1]
    assert beta.splitlines()[1].startswith("InternalServerError: Error code: 500")
    assert "391" in verbose.stdout


def test_a_refused_connection_is_reported_as_refused(stub, tmp_path):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = f', base_url: "http://127.0.0.1:{port}/v1"'
    result = _cli(
        "run",
        "--config",
        _stub_config(stub, tmp_path, beta=closed),
        "Hi",
        env=_state(tmp_path) | WIDE,
    )
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stderr.splitlines() if "stub:beta" in line]
    assert f"connection refused by 127.0.0.1:{port}" in row, row
    assert "timed out" not in result.stderr

"""Threads persisted in SQLite and PostgreSQL: continued, resumed after a kill, listed, keyless,
held by one runner at a time, and kept through a PostgreSQL restart.

Every store test runs against both a real SQLite file and a real PostgreSQL database (see
`store` in conftest.py), with the graph talking HTTP to the stand-in server. The restart
tests run `moa-graph run` against a PostgreSQL server of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import CheckpointStoreError, ConfigError, build_moa_graph
from moa_graph.persistence import (
    CHECKPOINT_URL_ENV_VAR,
    ThreadBusyError,
    checkpoint_url,
    default_state_path,
    list_threads,
    new_thread_id,
    open_checkpointer,
    open_sync_checkpointer,
    redact_url,
    thread_lock,
)
from moa_graph.testing import StubServer
from tests.conftest import Store
from tests.workers import pgserver
from tests.workers.stub import StubProcess
from tests.workers.turn import stub_config

ROOT = Path(__file__).resolve().parent.parent
TURN_WORKER = ROOT / "tests" / "workers" / "turn.py"
# A stray traceback from a store's worker thread would break the CLI's one-line errors.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

PASSWORD = "hunter2-not-for-logs"
SECRET = "sk-persist-SENTINEL-7f3a9c"


def _thread(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def _root(thread_id: str) -> RunnableConfig:
    """The thread's root namespace, as a saver's writes take it."""
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def _turn(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


# --- choosing the store ----------------------------------------------------------------------


def test_the_default_store_is_under_xdg_state_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_state_path() == tmp_path / "state" / "moa-graph" / "threads.sqlite"


def test_the_default_store_falls_back_to_local_state_in_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_path() == tmp_path / ".local" / "state" / "moa-graph" / "threads.sqlite"


def test_an_explicit_checkpoint_url_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(CHECKPOINT_URL_ENV_VAR, "postgresql://env@db/moa")
    assert checkpoint_url("postgresql://cli@db/moa") == "postgresql://cli@db/moa"
    assert checkpoint_url(None) == "postgresql://env@db/moa"
    monkeypatch.setenv(CHECKPOINT_URL_ENV_VAR, "")
    assert checkpoint_url(None) is None


def test_redact_url_hides_passwords_in_the_authority_and_the_query():
    assert redact_url(f"postgresql://moa:{PASSWORD}@db:5432/moa") == (
        "postgresql://moa:***@db:5432/moa"
    )
    assert PASSWORD not in redact_url(f"postgresql://db/moa?user=moa&password={PASSWORD}")
    assert redact_url("postgresql://moa@db/moa") == "postgresql://moa@db/moa"
    assert redact_url("postgresql://moa:p@ss@db/moa") == "postgresql://moa:***@db/moa"


def test_new_thread_ids_are_short_distinct_hex():
    ids = {new_thread_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


async def test_with_no_url_threads_go_to_the_default_sqlite_file(monkeypatch, tmp_path, stub):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    async with open_checkpointer() as saver:
        graph = build_moa_graph("demo", config=stub_config(stub.url)).compile(checkpointer=saver)
        await graph.ainvoke(_turn("hello"), _thread("t"))
    async with open_checkpointer(path=default_state_path()) as saver:
        assert [t.user_turns for t in await list_threads(saver)] == [1]
    assert (tmp_path / "xdg" / "moa-graph" / "threads.sqlite").is_file()


# --- errors opening a store ------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _open(opener: str, url: str) -> None:
    if opener == "sync":
        with open_sync_checkpointer(url):
            return

    async def enter() -> None:
        async with open_checkpointer(url):
            return

    asyncio.run(enter())


def _bad_stores(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Case name → (URL, the reason the one-line error must give)."""
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-directory.sqlite").mkdir()
    (tmp_path / "garbage.sqlite").write_bytes(b"this is not a SQLite database\n" * 100)
    port = _closed_port()
    return {
        "unreachable database": (
            f"postgresql://moa:{PASSWORD}@127.0.0.1:{port}/moa",
            "Connection refused",
        ),
        "malformed port": (
            f"postgresql://moa:{PASSWORD}@127.0.0.1:notaport/moa",
            'invalid integer value "notaport"',
        ),
        "unsupported scheme": (f"mysql://moa:{PASSWORD}@127.0.0.1/moa", "expected postgresql://"),
        "parent is a file": (f"sqlite://{tmp_path}/a-file/threads.sqlite", "File exists"),
        "path is a directory": (f"sqlite://{tmp_path}/a-directory.sqlite", "unable to open"),
        "not a database": (f"sqlite://{tmp_path}/garbage.sqlite", "not a database"),
    }


@pytest.mark.parametrize("opener", ["async", "sync"])
@pytest.mark.parametrize(
    "case",
    [
        "unreachable database",
        "malformed port",
        "unsupported scheme",
        "parent is a file",
        "path is a directory",
        "not a database",
    ],
)
def test_a_store_that_cannot_be_opened_is_one_config_error_line_without_the_password(
    tmp_path, opener, case
):
    url, reason = _bad_stores(tmp_path)[case]
    with pytest.raises(ConfigError) as info:
        _open(opener, url)
    message = str(info.value)
    assert "\n" not in message
    assert PASSWORD not in message
    assert PASSWORD not in repr(info.value.__cause__ or "")
    assert reason in message, message


@pytest.mark.parametrize("opener", ["async", "sync"])
def test_a_missing_database_on_a_real_server_is_a_config_error(pg_url, opener):
    server = urlsplit(pg_url)
    password = server.password or PASSWORD  # the test servers trust loopback: any will do
    netloc = f"{server.username}:{password}@{server.hostname}:{server.port or 5432}"
    with pytest.raises(ConfigError) as info:
        _open(opener, server._replace(netloc=netloc, path="/no_such_database").geturl())
    message = str(info.value)
    assert 'database "no_such_database" does not exist' in message, message
    assert password not in message and f"{server.username}:***@" in message
    assert "\n" not in message


def test_postgresql_without_the_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres.aio", None)
    with pytest.raises(ConfigError, match=r"moa-graph\[postgres\]"):
        _open("async", "postgresql://moa@127.0.0.1/moa")


# --- threads in both stores ------------------------------------------------------------------


async def test_a_second_turn_continues_the_persisted_thread(store: Store, stub: StubServer):
    builder = build_moa_graph("demo", config=stub_config(stub.url))
    thread = _thread(new_thread_id())
    first, second = "Name a river in France.", "And one in Spain?"
    async with store.open() as saver:
        await builder.compile(checkpointer=saver).ainvoke(_turn(first), thread)
    # A new connection: the second turn sees only what the first one persisted.
    async with store.open() as saver:
        out = await builder.compile(checkpointer=saver).ainvoke(_turn(second), thread)

    messages = out["messages"]
    assert [m.type for m in messages] == ["human", "ai", "human", "ai"]
    assert [messages[0].content, messages[2].content] == [first, second]
    assert second in messages[3].content and "weighing 2 reference answers" in messages[3].content
    boss_prompt = [m["content"] for m in stub.requests("boss")[-1]["messages"]]
    assert {first, messages[1].content, second} <= set(boss_prompt)
    alpha_view = [m["content"] for m in stub.requests("alpha")[-1]["messages"]]
    assert {first, messages[1].content, second} <= set(alpha_view)
    assert [r["label"] for r in out["references"]] == ["stub:alpha", "stub:beta"]
    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 2}


def _worker(store: Store, stub: StubServer, thread_id: str, *args: str) -> list[str]:
    return [
        sys.executable,
        str(TURN_WORKER),
        "--stub",
        stub.url,
        "--store",
        store.url,
        "--thread",
        thread_id,
        *args,
    ]


def _alpha_answer_is_stored(saver: BaseCheckpointSaver[Any], thread: RunnableConfig) -> bool:
    """Whether the `reference` task of `alpha` has its write in the latest checkpoint.

    (`fan_out` writes `reference_results` too: `None`, the reset.)
    """
    latest = saver.get_tuple(thread)
    return latest is not None and any(
        channel == "reference_results" and value and value[0]["label"] == "stub:alpha"
        for _, channel, value in latest.pending_writes or ()
    )


def test_a_killed_turn_resumes_in_a_new_process_rerunning_only_the_unfinished_reference(
    store: Store, stub: StubServer, tmp_path: Path
):
    stub.configure({"alpha": {"latency": 0.1}, "beta": {"latency": 30}})
    thread_id = new_thread_id()
    thread = _thread(thread_id)
    stderr = (tmp_path / "killed.stderr").open("w")
    worker = subprocess.Popen(
        _worker(store, stub, thread_id, "--message", "What is 17 * 23?"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        with store.open_sync() as saver:
            deadline = time.monotonic() + 60
            while not (_alpha_answer_is_stored(saver, thread) and stub.stats().get("beta") == 1):
                assert worker.poll() is None, (tmp_path / "killed.stderr").read_text()
                assert time.monotonic() < deadline, "alpha's answer was never stored"
                time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        stderr.close()

    stub.configure({"beta": {}})  # the slow provider recovers
    done = subprocess.run(
        _worker(store, stub, thread_id, "--resume"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)

    assert resumed["pid"] != worker.pid
    assert stub.stats() == {"alpha": 1, "beta": 2, "boss": 1}
    assert [(r["index"], r["label"], r["status"]) for r in resumed["references"]] == [
        (0, "stub:alpha", "ok"),
        (1, "stub:beta", "ok"),
    ]
    assert [m["type"] for m in resumed["messages"]] == ["human", "ai"]
    assert "weighing 2 reference answers" in resumed["messages"][-1]["content"]


async def test_the_api_key_is_never_written_to_the_store(
    store: Store, stub: StubServer, monkeypatch
):
    monkeypatch.setenv("MOA_PERSIST_KEY", SECRET)
    # A failing reference too: its error text is stored in the state.
    stub.configure({"beta": {"fault": {"kind": "status", "status": 401}}})
    config = stub_config(stub.url, api_key_env="MOA_PERSIST_KEY")
    question = "Which key opened this door?"
    async with store.open() as saver:
        graph = build_moa_graph("demo", config=config).compile(checkpointer=saver)
        thread = _thread(new_thread_id())
        await graph.ainvoke(_turn(question), thread)
        out = await graph.ainvoke(_turn("And the next one?"), thread)
        stored = store.raw_bytes()  # with SQLite, the write-ahead log too
    stored += store.raw_bytes()

    # The key was read (a missing key fails the reference without a request) ...
    assert out["references"][0]["status"] == "ok" and stub.stats()["alpha"] == 2
    assert out["references"][1]["status"] == "failed"
    # ... the dump holds what the thread stored ...
    assert question.encode() in stored and b"Error code: 401" in stored
    # ... and not the key.
    assert SECRET.encode() not in stored


async def test_list_threads_shows_the_latest_thread_first_with_its_user_turns(
    store: Store, stub: StubServer
):
    older, newer = new_thread_id(), new_thread_id()
    async with store.open() as saver:
        assert await list_threads(saver) == []
        graph = build_moa_graph("demo", config=stub_config(stub.url)).compile(checkpointer=saver)
        await graph.ainvoke(_turn("one"), _thread(newer))
        await graph.ainvoke(_turn("first"), _thread(older))
        await graph.ainvoke(_turn("two"), _thread(newer))
        threads = await list_threads(saver)
        latest_only = await list_threads(saver, limit=1)

    assert [(t.thread_id, t.user_turns) for t in threads] == [(newer, 2), (older, 1)]
    assert threads[0].updated_at > threads[1].updated_at
    assert threads[0].updated_at.utcoffset() is not None
    assert latest_only == threads[:1]


async def test_list_threads_scans_any_other_checkpointer(stub: StubServer):
    saver = InMemorySaver()
    graph = build_moa_graph("demo", config=stub_config(stub.url)).compile(checkpointer=saver)
    for thread_id, text in [("a", "one"), ("b", "first"), ("a", "two")]:
        await graph.ainvoke(_turn(text), _thread(thread_id))

    threads = await list_threads(saver)
    assert [(t.thread_id, t.user_turns) for t in threads] == [("a", 2), ("b", 1)]
    assert [t.thread_id for t in await list_threads(saver, limit=1)] == ["a"]


# --- one runner per thread -------------------------------------------------------------------


def test_a_held_thread_refuses_a_second_holder_until_released(store: Store):
    with thread_lock("t-held", store.url):
        with pytest.raises(ThreadBusyError) as info, thread_lock("t-held", store.url):
            pass
        with thread_lock("t-other", store.url):  # another thread is free meanwhile
            pass
    with thread_lock("t-held", store.url):  # released on exit
        pass
    assert info.value.thread_id == "t-held" and "thread t-held is busy" in str(info.value)


def _lock_holder(
    url: str, thread_id: str, *, write_on_input: bool = False
) -> subprocess.Popen[str]:
    """A process holding `thread_lock(thread_id, url)`; it prints `held` once it does.

    With `write_on_input`, each line it reads makes it write a checkpoint to the thread and
    print `wrote`, or the error's type and message.
    """
    if write_on_input:
        body = (
            "    with open_sync_checkpointer(URL) as saver:\n"
            "        print('held', flush=True)\n"
            "        for _ in sys.stdin:\n"
            "            config = {'configurable': {'thread_id': THREAD, 'checkpoint_ns': ''}}\n"
            "            try:\n"
            "                saver.put(config, empty_checkpoint(), {}, {})\n"
            "                print('wrote', flush=True)\n"
            "            except Exception as exc:\n"
            "                print(f'{type(exc).__name__}: {exc}', flush=True)\n"
        )
    else:
        body = "    print('held', flush=True)\n    time.sleep(120)\n"
    script = (
        "import sys, time\n"
        "from langgraph.checkpoint.base import empty_checkpoint\n"
        "from moa_graph.persistence import open_sync_checkpointer, thread_lock\n"
        f"URL, THREAD = {url!r}, {thread_id!r}\n"
        "with thread_lock(THREAD, URL):\n" + body
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def _ended(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_thread_lock_dies_with_its_process(store: Store):
    holder = _lock_holder(store.url, "t-dies")
    try:
        with pytest.raises(ThreadBusyError), thread_lock("t-dies", store.url):
            pass
    finally:
        _ended(holder)
    deadline = time.monotonic() + 10  # the server notices the closed socket
    while True:
        try:
            with thread_lock("t-dies", store.url):
                return
        except ThreadBusyError:
            assert time.monotonic() < deadline, "the lock outlived its process"
            time.sleep(0.1)


def test_a_sqlite_thread_lock_holds_through_a_symlink_to_the_database(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    (real / "db.sqlite").touch()
    (tmp_path / "file-link.sqlite").symlink_to(real / "db.sqlite")
    with thread_lock("t-linked", f"sqlite://{real}/db.sqlite"):
        for other in (f"{tmp_path}/linked/db.sqlite", f"{tmp_path}/file-link.sqlite"):
            with pytest.raises(ThreadBusyError), thread_lock("t-linked", f"sqlite://{other}"):
                pass
    assert sorted(p.name for p in real.iterdir()) == [".db.sqlite.locks", "db.sqlite"]
    assert not (tmp_path / ".file-link.sqlite.locks").exists()


# --- a PostgreSQL restart mid-turn -----------------------------------------------------------


@dataclass(frozen=True)
class OwnServer:
    """A PostgreSQL server of this test's own, to restart."""

    base: Path
    url: str


@pytest.fixture
def own_pg() -> Iterator[OwnServer]:
    # In /tmp, as conftest's `pg_url` explains.
    base = Path(tempfile.mkdtemp(prefix="moa-pg-restart-"))
    try:
        yield OwnServer(base, pgserver.start(base))
    finally:
        pgserver.stop(base)


@pytest.fixture
def slow_beta() -> Iterator[StubProcess]:
    """The stand-in in a process of its own, to freeze: alpha answers in 0.1 s, beta in 3 s."""
    stand_in = StubProcess({"alpha": {"latency": 0.1}, "beta": {"latency": 3}})
    try:
        yield stand_in
    finally:
        stand_in.stop()


def _cli_run(
    stub: StubServer | StubProcess, tmp_path: Path, url: str, *args: str
) -> subprocess.Popen[str]:
    """`moa-graph run --json` on the stand-in's preset `demo`, thread store `url`."""
    config = tmp_path / "moa.yaml"
    config.write_text(json.dumps(stub_config(stub.url)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOA_GRAPH_")}
    command = [sys.executable, "-m", "moa_graph.cli", "run", "--json", "--config", str(config)]
    return subprocess.Popen(
        [*command, "--checkpoint-url", url, *args],
        cwd=ROOT,
        env=env | {"XDG_STATE_HOME": str(tmp_path / "state")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(what: str, done: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


def _beta_in_flight_after_alpha_was_stored(
    stub: StubServer | StubProcess, url: str, thread_id: str, process: subprocess.Popen[str]
) -> None:
    with open_sync_checkpointer(url) as saver:
        _wait_for(
            "alpha stored, beta asked",
            lambda: (
                _alpha_answer_is_stored(saver, _thread(thread_id)) and stub.stats().get("beta") == 1
            ),
            process,
        )
    assert "boss" not in stub.stats()


def _finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=90)
    return process.returncode, stdout, stderr


def test_a_turn_rides_out_a_postgresql_restart_and_pays_each_model_once(
    own_pg: OwnServer, stub: StubServer, tmp_path: Path
):
    stub.configure({"alpha": {"latency": 0.1}, "beta": {"latency": 3}})
    turn = _cli_run(
        stub, tmp_path, own_pg.url, "--thread", "t-restart", "--new-thread", "Name a river."
    )
    _beta_in_flight_after_alpha_was_stored(stub, own_pg.url, "t-restart", turn)
    pgserver.restart(own_pg.base)  # every session of the run is cut

    status, stdout, stderr = _finished(turn)
    assert (status, stderr) == (0, "")  # not a word about the reconnect
    assert "weighing 2 reference answers" in json.loads(stdout)["answer"]
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 1}
    with open_sync_checkpointer(own_pg.url) as saver:
        latest = saver.get_tuple(_thread("t-restart"))
    assert latest is not None and [
        m.type for m in latest.checkpoint["channel_values"]["messages"]
    ] == [
        "human",
        "ai",
    ]


_ADVISORY_LOCKS_HELD = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"


def _wait_until_a_lock_is_held_again(url: str, process: subprocess.Popen[str]) -> None:
    """Until some session holds an advisory lock (the server was just restarted: none did)."""

    def held() -> bool:
        try:
            with psycopg.connect(url, connect_timeout=2) as admin:
                row = admin.execute(_ADVISORY_LOCKS_HELD).fetchone()
        except psycopg.OperationalError:
            return False
        return bool(row and row[0])

    deadline = time.monotonic() + 20
    while not held():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the runner did not take its thread lock again"
        time.sleep(0.1)


def test_a_thread_lock_is_taken_again_after_a_postgresql_restart(own_pg: OwnServer):
    holder = _lock_holder(own_pg.url, "t-relocked")
    try:
        pgserver.restart(own_pg.base)  # ends the lock's session, and so the lock
        _wait_until_a_lock_is_held_again(own_pg.url, holder)
        with pytest.raises(ThreadBusyError), thread_lock("t-relocked", own_pg.url):
            pass
        assert holder.poll() is None
    finally:
        _ended(holder)


def test_a_runner_whose_thread_was_taken_during_a_restart_writes_nothing_more(own_pg: OwnServer):
    holder = _lock_holder(own_pg.url, "t-taken", write_on_input=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        holder.send_signal(signal.SIGSTOP)  # it cannot take the lock again before we do
        pgserver.restart(own_pg.base)
        with thread_lock("t-taken", own_pg.url):
            holder.send_signal(signal.SIGCONT)
            holder.stdin.write("write\n")
            holder.stdin.flush()
            line = holder.stdout.readline()
        with open_sync_checkpointer(own_pg.url) as saver:
            stored = saver.get_tuple(_thread("t-taken"))
    finally:
        holder.send_signal(signal.SIGCONT)
        _ended(holder)
    assert (
        line == "ThreadBusyError: thread t-taken is busy: another run is on it; try again later\n"
    )
    assert stored is None  # its write was refused


def test_a_second_resume_is_refused_while_the_runner_rides_out_a_restart(
    own_pg: OwnServer, slow_beta: StubProcess, tmp_path: Path
):
    turn = _cli_run(
        slow_beta, tmp_path, own_pg.url, "--thread", "t-held", "--new-thread", "Name a river."
    )
    _beta_in_flight_after_alpha_was_stored(slow_beta, own_pg.url, "t-held", turn)
    slow_beta.freeze()  # beta's answer waits, however long the restart takes
    try:
        pgserver.restart(own_pg.base)  # ends the run's lock session too
        _wait_until_a_lock_is_held_again(own_pg.url, turn)
        status, _, stderr = _finished(
            _cli_run(slow_beta, tmp_path, own_pg.url, "--thread", "t-held", "--resume")
        )
        assert turn.poll() is None, "runner 1 ended before the second runner was refused"
    finally:
        slow_beta.thaw()

    assert status == 75 and stderr.strip() == (
        "moa-graph: error: thread t-held is busy: another run is on it; try again later"
    )
    status, stdout, stderr = _finished(turn)
    assert (status, stderr) == (0, "")
    assert "weighing 2 reference answers" in json.loads(stdout)["answer"]
    assert slow_beta.stats() == {"alpha": 1, "beta": 1, "boss": 1}


def test_a_database_down_past_the_timeout_stops_before_the_aggregator_and_resumes(
    own_pg: OwnServer, slow_beta: StubProcess, tmp_path: Path
):
    url = f"{own_pg.url}?connect_timeout=2"
    turn = _cli_run(slow_beta, tmp_path, url, "--thread", "t-down", "--new-thread", "Name a river.")
    _beta_in_flight_after_alpha_was_stored(slow_beta, url, "t-down", turn)
    slow_beta.freeze()  # beta answers once the database is down, however long that takes
    pgserver.halt(own_pg.base)
    slow_beta.thaw()
    try:
        status, _, stderr = _finished(turn)
    finally:
        pgserver.start_again(own_pg.base)

    assert status == 1 and "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("moa-graph: error: checkpoint database postgresql://"), line
    assert "--thread t-down --resume" in line
    assert "boss" not in slow_beta.stats()  # nothing paid for after the failed write

    status, stdout, stderr = _finished(
        _cli_run(slow_beta, tmp_path, url, "--thread", "t-down", "--resume")
    )
    assert status == 0, stderr
    assert "weighing 2 reference answers" in json.loads(stdout)["answer"]
    # alpha's stored answer was kept; beta's could not be stored while the database was down.
    assert slow_beta.stats() == {"alpha": 1, "beta": 2, "boss": 1}


_WAITING_ON_A_LOCK = (
    "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_write_cut_mid_call_is_made_again_on_a_fresh_connection(
    store: Store, slow_beta: StubProcess, tmp_path: Path
):
    turn = _cli_run(
        slow_beta, tmp_path, store.url, "--thread", "t-cut", "--new-thread", "Name a river."
    )
    _beta_in_flight_after_alpha_was_stored(slow_beta, store.url, "t-cut", turn)
    slow_beta.freeze()  # beta answers only once the table is locked
    with psycopg.connect(store.url) as admin:
        # beta's answer arrives and its write waits on this lock; then its session is cut.
        admin.execute("LOCK TABLE checkpoint_writes IN ACCESS EXCLUSIVE MODE")
        slow_beta.thaw()
        with psycopg.connect(store.url, autocommit=True) as watcher:
            _wait_for(
                "a write waiting",
                lambda: bool(watcher.execute(_WAITING_ON_A_LOCK).fetchall()),
                turn,
            )
            ((pid,),) = watcher.execute(_WAITING_ON_A_LOCK).fetchall()
            watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.rollback()

    status, stdout, stderr = _finished(turn)
    assert (status, stderr) == (0, "")  # not a word about the reconnect
    assert "weighing 2 reference answers" in json.loads(stdout)["answer"]
    assert slow_beta.stats() == {"alpha": 1, "beta": 1, "boss": 1}


# --- every wait bounded, every error one line -----------------------------------------------


def _with_options(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize("opener", ["async", "sync"])
@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_connect_timeout_that_would_wait_forever_is_refused(pg_url, opener, value):
    with pytest.raises(ConfigError) as info:
        _open(opener, _with_options(pg_url, connect_timeout=value))
    assert f"connect_timeout={value} must be whole seconds > 0" in str(info.value)
    with (
        pytest.raises(ConfigError, match="connect_timeout"),
        thread_lock("t", _with_options(pg_url, connect_timeout=value)),
    ):
        pass


_SETUP_LOCK = 0x6D6F615F6770


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
@pytest.mark.parametrize("opener", ["async", "sync"])
def test_opening_waits_for_the_setup_lock_only_as_long_as_the_statement_timeout(
    store: Store, opener: str
):
    with psycopg.connect(store.url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        started = time.monotonic()
        with pytest.raises(ConfigError) as info:
            _open(opener, _with_options(store.url, options="-c%20statement_timeout%3D1000"))
    assert "another worker held the setup lock past statement_timeout (1000 ms)" in str(info.value)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_sync_write_waiting_on_a_lock_ends_at_the_statement_timeout(store: Store):
    url = _with_options(store.url, options="-c%20statement_timeout%3D500")
    with open_sync_checkpointer(url) as saver, psycopg.connect(store.url) as admin:
        admin.execute("LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(CheckpointStoreError) as info:
            saver.put(_root("t-wait"), empty_checkpoint(), {}, {})
    assert "canceling statement due to statement timeout" in str(info.value)
    assert time.monotonic() - started < 10


def test_an_async_call_on_a_hung_backend_ends_within_its_bound(own_pg: OwnServer):
    url = _with_options(
        own_pg.url,
        connect_timeout="2",
        options="-c%20statement_timeout%3D1000",
        application_name="moa-hung",
    )

    async def call_while_hung() -> float:
        async with open_checkpointer(url) as saver:
            await saver.aget_tuple(_thread("t-hung"))  # the pool's connection, in use
            with psycopg.connect(own_pg.url, autocommit=True) as admin:
                ((pid,),) = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'moa-hung'"
                ).fetchall()
            os.kill(pid, signal.SIGSTOP)  # the kernel still acknowledges: only a timer helps
            try:
                started = time.monotonic()
                with pytest.raises(CheckpointStoreError, match="no answer within 3 s"):
                    await saver.aget_tuple(_thread("t-hung"))
                return time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)

    # The bound (connect_timeout + statement_timeout), then psycopg's 5 s for the cancel.
    assert asyncio.run(call_while_hung()) < 12


def _read_only(url: str) -> None:
    """Make new sessions read-only, as a failed-over server is, and end the present ones."""
    database = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
async def test_any_database_error_of_an_async_saver_is_one_line(store: Store):
    config = _root("t-ro")
    written: RunnableConfig = {"configurable": {**config["configurable"], "checkpoint_id": "1"}}
    async with store.open() as saver:
        _read_only(store.url)
        calls = {
            "aput": lambda: saver.aput(config, empty_checkpoint(), {}, {}),
            "aput_writes": lambda: saver.aput_writes(written, [("a", 1)], "task"),
            "adelete_thread": lambda: saver.adelete_thread("t-ro"),
        }
        for name, call in calls.items():
            with pytest.raises(CheckpointStoreError) as info:
                await call()
            assert "read-only transaction" in str(info.value), name
            assert "\n" not in str(info.value) and info.value.__cause__ is None
        with psycopg.connect(store.url, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute("DROP TABLE checkpoints")
        with pytest.raises(CheckpointStoreError, match='relation "checkpoints" does not exist'):
            [item async for item in saver.alist(None)]


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_any_database_error_of_a_sync_saver_is_one_line(store: Store):
    config = _root("t-ro")
    with store.open_sync() as saver:
        _read_only(store.url)
        with pytest.raises(CheckpointStoreError, match="read-only transaction"):
            saver.put(config, empty_checkpoint(), {}, {})
        with pytest.raises(CheckpointStoreError, match="read-only transaction"):
            saver.delete_thread("t-ro")
        with psycopg.connect(store.url, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute("DROP TABLE checkpoints")
        with pytest.raises(CheckpointStoreError, match='relation "checkpoints" does not exist'):
            list(saver.list(None))

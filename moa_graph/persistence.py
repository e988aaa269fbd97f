"""Where MoA threads live between runs: a SQLite file by default, PostgreSQL by URL.

`open_checkpointer` opens the checkpointer a compiled graph persists its threads in, with its
tables set up; `list_threads` summarises the threads it holds; `thread_lock` keeps a thread
to one runner at a time. Which store: an explicit URL, else `$MOA_GRAPH_CHECKPOINT_URL`,
else the SQLite file at `default_state_path()`.

Example:
    >>> url, thread_id = checkpoint_url(None), new_thread_id()  # doctest: +SKIP
    >>> with thread_lock(thread_id, url):  # doctest: +SKIP
    ...     async with open_checkpointer(url) as saver:
    ...         graph = build_moa_graph("review", config=config).compile(checkpointer=saver)
    ...         thread = {"configurable": {"thread_id": thread_id}}
    ...         await graph.ainvoke({"messages": [("user", "What is 17 * 23?")]}, thread,
    ...                             durability="sync")
    ...         print(await list_threads(saver))

PostgreSQL needs the `postgres` extra (`pip install 'moa-graph[postgres]'`); its savers
read and write through a connection pool that outlives a server restart (see
`moa_graph.postgres`). Every failure to open a store is a one-line `ConfigError`, and a
store failing mid-run a one-line `CheckpointStoreError`; neither repeats a password.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from moa_graph.errors import CheckpointStoreError, ConfigError, ThreadBusyError, _one_line

__all__ = [
    "CHECKPOINT_URL_ENV_VAR",
    "CheckpointStoreError",
    "ThreadBusyError",
    "ThreadSummary",
    "checkpoint_url",
    "default_state_path",
    "list_threads",
    "new_thread_id",
    "open_checkpointer",
    "open_sync_checkpointer",
    "redact_url",
    "thread_lock",
]

CHECKPOINT_URL_ENV_VAR = "MOA_GRAPH_CHECKPOINT_URL"
"""Environment variable naming the checkpoint store when no URL is given."""

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite://"
# Up to the last `@` of the authority: a password may hold an unescaped `@`.
_PASSWORD_IN_AUTHORITY = re.compile(r"(?<=://)([^/?#:@]*):[^/?#]*@")
_PASSWORD_IN_QUERY = re.compile(r"(?i)(\bpassword=)[^&\s]*")
_LATEST_THREADS_SQL = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
    "GROUP BY thread_id ORDER BY MAX(checkpoint_id) DESC LIMIT {limit}"
)


@dataclass(frozen=True)
class ThreadSummary:
    """One persisted thread, as `list_threads` reports it."""

    thread_id: str
    """The `thread_id` to pass in `{"configurable": {"thread_id": ...}}` to continue it."""
    updated_at: datetime
    """When its latest checkpoint was written (timezone-aware, UTC)."""
    user_turns: int
    """Human messages in its latest checkpoint."""
    first_question: str = ""
    """The text of its first human message ("" when it has none)."""


def default_state_path() -> Path:
    """Return the SQLite file that holds threads when no checkpoint URL is given.

    Returns:
        `$XDG_STATE_HOME/moa-graph/threads.sqlite`, else
        `~/.local/state/moa-graph/threads.sqlite`.
    """
    state_home = os.environ.get("XDG_STATE_HOME")
    base = Path(state_home) if state_home else Path.home() / ".local" / "state"
    return base / "moa-graph" / "threads.sqlite"


def checkpoint_url(explicit: str | None) -> str | None:
    """Return the checkpoint store to use: the explicit URL, else `$MOA_GRAPH_CHECKPOINT_URL`.

    Args:
        explicit: A URL given on the command line or in code; it wins over the environment.

    Returns:
        The URL, or None for the default SQLite file (an empty variable counts as unset).
    """
    return explicit or os.environ.get(CHECKPOINT_URL_ENV_VAR) or None


def redact_url(url: str) -> str:
    """Return the URL with its password replaced by `***`, fit for messages and logs.

    Example:
        >>> redact_url("postgresql://moa:s3cret@db:5432/moa")
        'postgresql://moa:***@db:5432/moa'
    """
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_AUTHORITY.sub(r"\1:***@", url))


def new_thread_id() -> str:
    """Return a fresh random thread id: 16 hex digits, short enough to type back."""
    return secrets.token_hex(8)


@asynccontextmanager
async def open_checkpointer(
    url: str | None = None, *, path: Path | None = None
) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open the async checkpointer for a store, with its tables created; close it on exit.

    Args:
        url: `postgresql://user:password@host:port/db` (or `postgres://`) for an
            `AsyncPostgresSaver`; `sqlite://<path>` (e.g. `sqlite:///var/lib/moa.sqlite`) or
            None for an `AsyncSqliteSaver`.
        path: The SQLite file when `url` is None (default: `default_state_path()`); its
            parent directories are created.

    Yields:
        The checkpointer; pass it to `compile(checkpointer=...)` and run with
        `ainvoke`/`astream`.

    Raises:
        ConfigError: The URL is not one of the above, the PostgreSQL extra is missing, the
            database cannot be reached or set up, or the file cannot be created or is not a
            SQLite database. One line, with any password redacted.
    """
    async with AsyncExitStack() as stack:
        if url is not None and _is_postgres(url):
            yield await _postgres().aopen(url, stack)
        else:
            yield await _aopen_sqlite(_sqlite_file(url, path), stack)


@contextmanager
def open_sync_checkpointer(
    url: str | None = None, *, path: Path | None = None
) -> Iterator[BaseCheckpointSaver[str]]:
    """Open the synchronous checkpointer for a store (`PostgresSaver` or `SqliteSaver`).

    The same stores and errors as `open_checkpointer`, for code that runs graphs with
    `invoke`/`stream`. Both checkpointers read and write the same tables, so a thread
    started by one can be continued by the other.

    Args:
        url: As for `open_checkpointer`.
        path: As for `open_checkpointer`.

    Yields:
        The checkpointer.

    Raises:
        ConfigError: As for `open_checkpointer`.
    """
    with ExitStack() as stack:
        if url is not None and _is_postgres(url):
            yield _postgres().open_sync(url, stack)
        else:
            yield _open_sqlite(_sqlite_file(url, path), stack)


@contextmanager
def thread_lock(
    thread_id: str, url: str | None = None, *, path: Path | None = None
) -> Iterator[None]:
    """Keep a thread to one runner: while held, `thread_lock` on it anywhere raises at once.

    Take it around a run (or a resume) so that two workers never pay for the same turn.
    Both are released on exit and by the OS or server if the process dies. It blocks only
    to connect, so it is fine around `await`s as well.

    PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a key derived from the
    thread id, on a connection of its own held until exit. A thread of the lock's own
    watches that session: when it ends (a server restart, `pg_terminate_backend`, a
    dropped connection) it reconnects and takes the lock again. Each checkpoint write the
    savers of `open_checkpointer(url)` make for a held thread first checks the lock (no
    round trip) and, if another runner took the thread in between, raises
    `ThreadBusyError` instead of writing, before anything more is paid for.

    SQLite: `flock` on a file per thread in `.<database name>.locks/` beside the database
    (symlinks resolved; POSIX only). The lock files stay, one small empty file per thread.

    Example:
        >>> with thread_lock("0f3c2a9d41e8b7c6", "postgresql://moa@db/moa"):  # doctest: +SKIP
        ...     graph.invoke(None, {"configurable": {"thread_id": "0f3c2a9d41e8b7c6"}})

    Args:
        thread_id: The thread to hold.
        url: The store, as for `open_checkpointer`.
        path: The SQLite file when `url` is None, as for `open_checkpointer`.

    Raises:
        ThreadBusyError: Another runner holds the thread.
        ConfigError: The store cannot be reached (as for `open_checkpointer`).
    """
    if url is not None and _is_postgres(url):
        with _postgres().thread_lock(url, thread_id):
            yield
    else:
        with _sqlite_thread_lock(
            _sqlite_file(url, path), thread_digest(thread_id).hex(), thread_id
        ):
            yield


def thread_digest(thread_id: str) -> bytes:
    """The 8 bytes a thread's lock is named by (a file name, a PostgreSQL bigint key)."""
    return hashlib.blake2b(thread_id.encode(), digest_size=8, person=b"moa-lock").digest()


async def list_threads(
    checkpointer: BaseCheckpointSaver[Any], *, limit: int | None = None
) -> list[ThreadSummary]:
    """Summarise the threads an async checkpointer holds, most recently updated first.

    Args:
        checkpointer: An async checkpointer, e.g. the one `open_checkpointer` yields. For
            the SQLite and PostgreSQL savers the latest threads are found with one query;
            any other saver is scanned through `alist`.
        limit: Return at most this many threads.

    Returns:
        One `ThreadSummary` per thread (checkpoints of subgraphs are not threads).
    """
    latest = await _latest_checkpoints(checkpointer, limit)
    summaries = [_summary(item) for item in latest]
    summaries.sort(key=lambda s: (s.updated_at, s.thread_id), reverse=True)
    return summaries if limit is None else summaries[:limit]


# --- choosing the store ----------------------------------------------------------------------


def _is_postgres(url: str) -> bool:
    return url.lower().startswith(_POSTGRES_SCHEMES)


def _sqlite_file(url: str | None, path: Path | None) -> Path:
    if url is None:
        return path or default_state_path()
    if url.lower().startswith(_SQLITE_SCHEME) and len(url) > len(_SQLITE_SCHEME):
        return Path(url[len(_SQLITE_SCHEME) :]).expanduser()
    raise ConfigError(
        f"unsupported checkpoint URL {redact_url(url)!r}: "
        "expected postgresql://user@host:port/db or sqlite://<path>"
    )


# --- SQLite ----------------------------------------------------------------------------------


def _sqlite_error(file: Path, exc: Exception) -> ConfigError:
    return ConfigError(_one_line(f"cannot open checkpoint file {file}: {exc}"))


def _create_sqlite_file(file: Path) -> None:
    """Create the file and its directories, failing here if it cannot be opened.

    aiosqlite reports a failed connect from its worker thread to the event loop, which
    `asyncio.run` may have closed by then (a stray traceback after our one-line error).
    """
    file.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(file).close()


@contextmanager
def _sqlite_thread_lock(file: Path, key: str, thread_id: str) -> Iterator[None]:
    import fcntl

    # The real path: a database reached through a symlink and by its own path is one database.
    real = file.expanduser().resolve()
    lock_file = real.with_name(f".{real.name}.locks") / f"{key}.lock"
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _sqlite_error(file, exc) from exc
    try:  # closing the file releases the lock (and so does a dead process)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ThreadBusyError(thread_id) from None
        yield
    finally:
        os.close(fd)


async def _aopen_sqlite(file: Path, stack: AsyncExitStack) -> AsyncSqliteSaver:
    try:
        _create_sqlite_file(file)
        saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(file)))
        await saver.setup()
    except (OSError, sqlite3.Error) as exc:
        raise _sqlite_error(file, exc) from exc
    return saver


def _open_sqlite(file: Path, stack: ExitStack) -> SqliteSaver:
    try:
        _create_sqlite_file(file)
        saver = stack.enter_context(SqliteSaver.from_conn_string(str(file)))
        saver.setup()
    except (OSError, sqlite3.Error) as exc:
        raise _sqlite_error(file, exc) from exc
    return saver


# --- PostgreSQL ------------------------------------------------------------------------------


def _postgres() -> ModuleType:
    """`moa_graph.postgres`, once the `postgres` extra is known to be installed."""
    try:
        import langgraph.checkpoint.postgres.aio  # noqa: F401  (the extra, checked each time)

        from moa_graph import postgres
    except ImportError:
        raise ConfigError(
            "PostgreSQL checkpoints need the postgres extra: pip install 'moa-graph[postgres]'"
        ) from None
    return postgres


# --- listing threads -------------------------------------------------------------------------


def _root_config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


async def _latest_checkpoints(
    saver: BaseCheckpointSaver[Any], limit: int | None
) -> list[CheckpointTuple]:
    """The latest root checkpoint of each thread (of the `limit` latest threads, if given)."""
    thread_ids = await _latest_thread_ids(saver, limit)
    if thread_ids is None:
        latest: dict[str, CheckpointTuple] = {}
        async for item in saver.alist(None):
            configurable = item.config["configurable"]
            if configurable.get("checkpoint_ns", ""):
                continue
            thread_id = str(configurable["thread_id"])
            known = latest.get(thread_id)
            if known is None or item.checkpoint["id"] > known.checkpoint["id"]:
                latest[thread_id] = item
        return list(latest.values())
    found = [await saver.aget_tuple(_root_config(thread_id)) for thread_id in thread_ids]
    return [item for item in found if item is not None]


async def _latest_thread_ids(
    saver: BaseCheckpointSaver[Any], limit: int | None
) -> list[str] | None:
    """Thread ids, latest first, by one query on the saver's table; None for other savers."""
    if isinstance(saver, AsyncSqliteSaver):
        await saver.setup()
        sql = _LATEST_THREADS_SQL.format(limit="?")
        async with saver.lock, saver.conn.execute(sql, (-1 if limit is None else limit,)) as cur:
            return [str(row[0]) for row in await cur.fetchall()]
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        return None
    if isinstance(saver, AsyncPostgresSaver):
        sql = _LATEST_THREADS_SQL.format(limit="%s")
        return list(await _postgres().latest_thread_ids(saver, sql, limit))
    return None


def _summary(item: CheckpointTuple) -> ThreadSummary:
    messages = item.checkpoint["channel_values"].get("messages") or []
    questions = [message for message in messages if isinstance(message, HumanMessage)]
    return ThreadSummary(
        thread_id=str(item.config["configurable"]["thread_id"]),
        updated_at=datetime.fromisoformat(item.checkpoint["ts"]),
        user_turns=len(questions),
        first_question=questions[0].text if questions else "",
    )

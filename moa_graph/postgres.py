"""The PostgreSQL side of `moa_graph.persistence`: pooled savers that outlive a restart.

Imported by `persistence` only for a `postgresql://` URL, so it may need the `postgres` extra
(`psycopg`, `psycopg_pool`, `langgraph-checkpoint-postgres`) at import time. Nothing here is
public: open stores through `moa_graph.persistence`.

What a server restart does to a run:
- Each saver reads and writes through a pool of one connection, checked before use when it
  sat idle, so a connection the restart cut is replaced by a fresh one.
- Waiting for a connection is bounded by the URL's `connect_timeout` (default
  `_CONNECT_TIMEOUT_S`): a restart shorter than that costs the run only the wait. So is a
  write the server never acknowledges (`tcp_user_timeout`, as long).
- A call that fails on a connection cut mid-call is made once more on a fresh connection:
  the savers' writes are upserts, so a write the server had applied is not doubled.
- Otherwise the call raises `CheckpointStoreError` (one line, no password).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from moa_graph.errors import ConfigError
from moa_graph.persistence import CheckpointStoreError, ThreadBusyError, redact_url

__all__: list[str] = []

_CONNECT_TIMEOUT_S = 10
"""libpq waits for an unreachable host for minutes unless the URL sets `connect_timeout`; the
pool waits as long for a connection."""
_SETUP_LOCK = 0x6D6F615F6770
"""PostgreSQL advisory lock key held while creating tables, so that workers starting
together do not race on the saver's migrations."""
_CHECK_AFTER_IDLE_S = 1.0
"""A pooled connection idle longer than this is checked (one round trip) before use; one
used more recently is not (if it died since, the call fails and is retried)."""
_CONNECTION: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
"""How the savers need their connections (see `PostgresSaver.from_conn_string`)."""

_T = TypeVar("_T")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _hide_password(url: str, text: str) -> str:
    text = redact_url(_one_line(text))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for form in {password, unquote(password)} if password else ():
        text = text.replace(form, "***")
    return text


def _open_error(url: str, exc: Exception) -> ConfigError:
    return ConfigError(_hide_password(url, f"cannot open checkpoint database {url}: {exc}"))


def _store_error(url: str, exc: Exception) -> CheckpointStoreError:
    return CheckpointStoreError(_hide_password(url, f"checkpoint database {url} failed: {exc}"))


def _conninfo(url: str) -> str:
    """The URL with a connect timeout, and a TCP user timeout as long, unless it sets them.

    Raises on a malformed URL; a malformed timeout is left for libpq to report.
    """
    given = conninfo_to_dict(url)
    try:
        timeout_s = int(str(given.get("connect_timeout", _CONNECT_TIMEOUT_S)))
    except ValueError:
        return url
    bounds = {"connect_timeout": timeout_s, "tcp_user_timeout": timeout_s * 1000}  # ms
    return make_conninfo(url, **{k: v for k, v in bounds.items() if k not in given})


def _wait_s(conninfo: str) -> float:
    """How long the pool waits for a connection: as long as a connect may take."""
    return float(str(conninfo_to_dict(conninfo)["connect_timeout"]))


class _IdleCheck:
    """The pools' `check` and `reset` callbacks: check a connection only after it sat idle."""

    def __init__(self) -> None:
        self._returned: WeakKeyDictionary[Any, float] = WeakKeyDictionary()

    def _idle(self, conn: Any) -> bool:
        return time.monotonic() - self._returned.get(conn, 0.0) > _CHECK_AFTER_IDLE_S

    def reset(self, conn: Any) -> None:
        self._returned[conn] = time.monotonic()

    async def areset(self, conn: Any) -> None:
        self.reset(conn)

    def check(self, conn: psycopg.Connection[Any]) -> None:
        if self._idle(conn):
            ConnectionPool.check_connection(conn)

    async def acheck(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._idle(conn):
            await AsyncConnectionPool.check_connection(conn)


def _retry_now(url: str, exc: psycopg.OperationalError, attempt: int) -> None:
    """Return on the first failure of a call on a broken connection; else raise the error.

    The pool's own timeout means the store stayed down for the whole wait: no second wait.
    """
    if attempt > 0 or isinstance(exc, PoolTimeout):
        raise _store_error(url, exc) from None


async def _aretry(url: str, call: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
    for attempt in range(2):
        try:
            return await call(*args, **kwargs)
        except psycopg.OperationalError as exc:
            _retry_now(url, exc, attempt)
    raise AssertionError("unreachable: the second failure raises")


def _retry(url: str, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    for attempt in range(2):
        try:
            return call(*args, **kwargs)
        except psycopg.OperationalError as exc:
            _retry_now(url, exc, attempt)
    raise AssertionError("unreachable: the second failure raises")


class _AsyncSaver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` on a pool whose calls are retried once on a fresh connection."""

    def __init__(self, pool: AsyncConnectionPool[Any], url: str) -> None:
        super().__init__(pool)
        self.url = url

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        return await _aretry(self.url, super().aput, *args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        await _aretry(self.url, super().aput_writes, *args, **kwargs)

    async def aget_tuple(self, *args: Any, **kwargs: Any) -> Any:
        return await _aretry(self.url, super().aget_tuple, *args, **kwargs)


class _Saver(PostgresSaver):
    """`PostgresSaver` on a pool whose calls are retried once on a fresh connection."""

    def __init__(self, pool: ConnectionPool[Any], url: str) -> None:
        super().__init__(pool)
        self.url = url

    def put(self, *args: Any, **kwargs: Any) -> Any:
        return _retry(self.url, super().put, *args, **kwargs)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        _retry(self.url, super().put_writes, *args, **kwargs)

    def get_tuple(self, *args: Any, **kwargs: Any) -> Any:
        return _retry(self.url, super().get_tuple, *args, **kwargs)


async def aopen(url: str, stack: AsyncExitStack) -> AsyncPostgresSaver:
    """Create the tables (on a connection of its own), then the pooled saver; see module."""
    try:
        conninfo = _conninfo(url)
        # A direct connection first: its error says why (a pool's says only "timeout").
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row
        ) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
            try:
                await AsyncPostgresSaver(conn).setup()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
    except psycopg.Error as exc:
        # `from None`: psycopg's own message may quote the URL, password and all.
        raise _open_error(url, exc) from None
    idle = _IdleCheck()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        kwargs=_CONNECTION,
        min_size=1,
        max_size=1,  # the saver's lock serialises its calls
        open=False,
        check=idle.acheck,
        reset=idle.areset,
        timeout=_wait_s(conninfo),
    )
    await pool.open()
    stack.push_async_callback(pool.close)
    return _AsyncSaver(pool, url)


def open_sync(url: str, stack: ExitStack) -> PostgresSaver:
    """`aopen` for the synchronous saver."""
    try:
        conninfo = _conninfo(url)
        with psycopg.Connection.connect(
            conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row
        ) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
            try:
                PostgresSaver(conn).setup()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
    except psycopg.Error as exc:
        raise _open_error(url, exc) from None
    idle = _IdleCheck()
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo,
        kwargs=_CONNECTION,
        min_size=1,
        max_size=1,
        open=False,
        check=idle.check,
        reset=idle.reset,
        timeout=_wait_s(conninfo),
    )
    pool.open()
    stack.callback(pool.close)
    return _Saver(pool, url)


@contextmanager
def thread_lock(url: str, key: int, thread_id: str) -> Iterator[None]:
    """Hold the session advisory lock `key` on a connection of its own until exit."""
    try:
        conn = psycopg.Connection.connect(_conninfo(url), autocommit=True)
    except psycopg.Error as exc:
        raise _open_error(url, exc) from None
    try:  # closing the session releases the lock (and a restart or a dead process does)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        except psycopg.Error as exc:
            raise _open_error(url, exc) from None
        if not (row and row[0]):
            raise ThreadBusyError(thread_id)
        yield
    finally:
        conn.close()


async def latest_thread_ids(saver: AsyncPostgresSaver, sql: str, limit: int | None) -> list[str]:
    """Run `sql` (thread ids, latest first, `%s` the limit) on the saver's connection."""

    async def query() -> list[str]:
        async with saver.lock, _aconnection(saver.conn) as conn:
            cursor = await conn.execute(sql, (limit,))
            return [str(row["thread_id"]) for row in await cursor.fetchall()]

    if isinstance(saver, _AsyncSaver):
        return await _aretry(saver.url, query)
    return await query()


@asynccontextmanager
async def _aconnection(conn: Any) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
    if isinstance(conn, AsyncConnectionPool):
        async with conn.connection() as pooled:
            yield pooled
    else:
        yield conn

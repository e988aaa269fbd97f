"""The PostgreSQL side of `moa_graph.persistence`: pooled savers that outlive a restart.

Imported by `persistence` only for a `postgresql://` URL, so it may need the `postgres` extra
(`psycopg`, `psycopg_pool`, `langgraph-checkpoint-postgres`) at import time. Nothing here is
public: open stores through `moa_graph.persistence`.

Every wait is bounded, each bound set by the URL's own parameters:
- connecting, and waiting for a pooled connection: `connect_timeout` (default
  `_CONNECT_TIMEOUT_S`; 0, libpq's "forever", is refused). A write the server never
  acknowledges: `tcp_user_timeout`, as long. A dead peer: TCP keepalives (`_KEEPALIVES`).
- each statement, including the wait for the setup lock: the server's `statement_timeout`
  (default `_STATEMENT_TIMEOUT_MS`, set through `options` unless the URL's `options` sets
  it; 0 is refused). Async calls are also bounded on the client, by `connect_timeout` plus
  `statement_timeout` (psycopg then cancels the query), for a server too hung to enforce
  its own timeout; synchronous calls have only the server's bound and the TCP ones.

What a server restart does to a run:
- Each saver reads and writes through a pool of one connection, checked before use when it
  sat idle, so a connection the restart cut is replaced by a fresh one.
- A call that fails on a connection cut mid-call is made once more on a fresh connection:
  the savers' writes are upserts, so a write the server had applied is not doubled.
- A thread lock's session is watched by a thread of its own: when the session ends, the
  watcher reconnects and takes the lock again. Each checkpoint write of a held thread
  first checks that it is held (a flag and a non-blocking poll of the lock's socket); if
  another runner took the thread meanwhile, the write raises `ThreadBusyError` instead.
- Anything else psycopg raises becomes `CheckpointStoreError` (one line, no password).
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from moa_graph.errors import CheckpointStoreError, ConfigError, ThreadBusyError, _one_line
from moa_graph.persistence import redact_url, thread_digest

__all__: list[str] = []

_CONNECT_TIMEOUT_S = 10
"""libpq waits for an unreachable host for minutes unless the URL sets `connect_timeout`; the
pool waits as long for a connection."""
_STATEMENT_TIMEOUT_MS = 30_000
"""The sessions' `statement_timeout` unless the URL's `options` set one: a checkpoint write
takes milliseconds, and a migration of a large table at setup seconds."""
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2}
"""A peer gone silent (a dead host, a dropped NAT mapping) is noticed within about
`keepalives_idle` plus `tcp_user_timeout`; the probes also keep idle NAT mappings alive."""
_SETUP_LOCK = 0x6D6F615F6770
"""PostgreSQL advisory lock key held while creating tables, so that workers starting
together do not race on the saver's migrations."""
_CHECK_AFTER_IDLE_S = 1.0
"""A pooled connection idle longer than this is checked (one round trip) before use; one
used more recently is not (if it died since, the call fails and is retried)."""
_RETAKE_BACKOFF_S = (0.05, 1.0)
"""How soon a thread lock's watcher tries again to reconnect: first, and at most."""
_CONNECTION: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
"""How the savers need their connections (see `PostgresSaver.from_conn_string`)."""

_T = TypeVar("_T")


def _hide_password(url: str, text: str) -> str:
    text = redact_url(_one_line(text))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for form in {password, unquote(password)} if password else ():
        text = text.replace(form, "***")
    return text


def _open_error(url: str, exc: Exception | str) -> ConfigError:
    return ConfigError(_hide_password(url, f"cannot open checkpoint database {url}: {exc}"))


def _store_error(url: str, exc: Exception | str) -> CheckpointStoreError:
    return CheckpointStoreError(_hide_password(url, f"checkpoint database {url} failed: {exc}"))


# --- bounds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Store:
    """A database as the savers and thread locks of one URL reach it."""

    url: str
    """As given, for messages (password redacted there)."""
    conninfo: str
    """The URL with every bound the module docstring lists."""
    connect_s: float
    call_s: float = 0.0
    """The client-side bound on one async saver call (set once the server said its
    `statement_timeout`)."""


def _store(url: str) -> _Store:
    """The URL with its bounds; `ConfigError` for a malformed one or a zero timeout."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise _open_error(url, exc) from None
    raw = str(given.get("connect_timeout", _CONNECT_TIMEOUT_S))
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise _open_error(
            url, f"connect_timeout={raw} must be whole seconds > 0 (0 would wait forever)"
        )
    connect_s = int(raw)
    bounds: dict[str, Any] = {
        "connect_timeout": connect_s,
        "tcp_user_timeout": connect_s * 1000,  # ms
        **_KEEPALIVES,
    }
    options = str(given.get("options", ""))
    if "statement_timeout" not in options:
        bounds["options"] = f"{options} -c statement_timeout={_STATEMENT_TIMEOUT_MS}".strip()
    conninfo = make_conninfo(url, **{k: v for k, v in bounds.items() if k not in given})
    return _Store(url, conninfo, float(connect_s))


def _set_up(url: str) -> tuple[_Store, tuple[Any, ...]]:
    """Create the tables, on a connection of its own.

    Returns:
        The store, its call bound known, and its database's identity (see `_database`).
    """
    store = _store(url)
    try:
        # A direct connection first: its error says why (a pool's says only "timeout").
        with psycopg.Connection.connect(store.conninfo, **_CONNECTION) as conn:
            row = conn.execute(
                "SELECT setting::int AS ms FROM pg_settings WHERE name = 'statement_timeout'"
            ).fetchone()
            statement_ms = int(row["ms"]) if row else 0
            if statement_ms <= 0:
                raise _open_error(url, "statement_timeout=0 would let a call wait forever")
            try:  # bounded by statement_timeout
                conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
            except psycopg.errors.QueryCanceled:
                raise _open_error(
                    url,
                    f"another worker held the setup lock past statement_timeout "
                    f"({statement_ms} ms)",
                ) from None
            try:
                PostgresSaver(conn).setup()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
            database = _database(conn)
    except psycopg.Error as exc:
        # `from None`: psycopg's own message may quote the URL, password and all.
        raise _open_error(url, exc) from None
    call_s = store.connect_s + statement_ms / 1000
    return _Store(url, store.conninfo, store.connect_s, call_s), database


def _database(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """Which database a connection reached, to match savers with thread locks."""
    return (conn.info.host, conn.info.port, conn.info.dbname)


# --- the pooled savers -----------------------------------------------------------------------


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


def _pool_options(store: _Store, check: Any, reset: Any) -> dict[str, Any]:
    return {
        "conninfo": store.conninfo,
        "kwargs": _CONNECTION,
        "min_size": 1,
        "max_size": 1,  # the saver's lock serialises its calls
        "open": False,
        "check": check,
        "reset": reset,
        "timeout": store.connect_s,
    }


def _retry_now(url: str, exc: psycopg.Error, attempt: int) -> None:
    """Return on the first failure of a call on a broken connection; else raise the error.

    The pool's own timeout means the store stayed down for the whole wait: no second wait.
    Any other error (a read-only server during a failover, a missing table) is not a broken
    connection: a second try would fail the same way.
    """
    retry = isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolTimeout)
    if attempt > 0 or not retry:
        raise _store_error(url, exc) from None


def _lock_to_confirm(database: tuple[Any, ...], config: Any) -> _HeldLock | None:
    """The lock this process holds on the thread `config` writes to, unless plainly intact."""
    thread_id = (config or {}).get("configurable", {}).get("thread_id")
    held = _HELD.get((database, _lock_key(str(thread_id)))) if thread_id is not None else None
    if held is None or held.intact():
        return None
    return held


class _AsyncSaver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` on a pool, each call bounded and retried once on a fresh connection.

    Its errors are one line; each write to a thread this process holds checks the lock first.
    """

    def __init__(
        self, pool: AsyncConnectionPool[Any], store: _Store, database: tuple[Any, ...]
    ) -> None:
        super().__init__(pool)
        self.store, self.database = store, database

    async def call(self, method: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """`method(*args, **kwargs)`, bounded and retried; see the class."""
        for attempt in range(2):
            try:
                async with asyncio.timeout(self.store.call_s):
                    return await method(*args, **kwargs)
            except TimeoutError:
                raise _store_error(
                    self.store.url, f"no answer within {self.store.call_s:g} s"
                ) from None
            except psycopg.Error as exc:
                _retry_now(self.store.url, exc, attempt)
        raise AssertionError("unreachable: the second failure raises")

    async def write(self, method: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """A checkpoint write, once the lock on its thread (if held here) is confirmed."""
        held = _lock_to_confirm(self.database, kwargs.get("config", args[0] if args else None))
        if held is not None:
            await asyncio.to_thread(held.confirm)
        return await self.call(method, *args, **kwargs)

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        return await self.write(super().aput, *args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        await self.write(super().aput_writes, *args, **kwargs)

    async def aget_tuple(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call(super().aget_tuple, *args, **kwargs)

    async def adelete_thread(self, *args: Any, **kwargs: Any) -> None:
        await self.call(super().adelete_thread, *args, **kwargs)

    async def aprune(self, *args: Any, **kwargs: Any) -> None:
        await self.call(super().aprune, *args, **kwargs)

    async def aget_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call(super().aget_delta_channel_history, *args, **kwargs)

    async def alist(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        items = cast(AsyncGenerator[Any, None], super().alist(*args, **kwargs))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.store.call_s):
                        item = await anext(items)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise _store_error(self.store.url, "no answer in time") from None
                except psycopg.Error as exc:
                    raise _store_error(self.store.url, exc) from None
                yield item
        finally:
            await items.aclose()


class _Saver(PostgresSaver):
    """`_AsyncSaver` for the synchronous saver (bounded by the server and TCP only)."""

    def __init__(self, pool: ConnectionPool[Any], store: _Store, database: tuple[Any, ...]) -> None:
        super().__init__(pool)
        self.store, self.database = store, database

    def call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """`method(*args, **kwargs)`, retried; see `_AsyncSaver`."""
        for attempt in range(2):
            try:
                return method(*args, **kwargs)
            except psycopg.Error as exc:
                _retry_now(self.store.url, exc, attempt)
        raise AssertionError("unreachable: the second failure raises")

    def write(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A checkpoint write, once the lock on its thread (if held here) is confirmed."""
        held = _lock_to_confirm(self.database, kwargs.get("config", args[0] if args else None))
        if held is not None:
            held.confirm()
        return self.call(method, *args, **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        return self.write(super().put, *args, **kwargs)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        self.write(super().put_writes, *args, **kwargs)

    def get_tuple(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(super().get_tuple, *args, **kwargs)

    def delete_thread(self, *args: Any, **kwargs: Any) -> None:
        self.call(super().delete_thread, *args, **kwargs)

    def prune(self, *args: Any, **kwargs: Any) -> None:
        self.call(super().prune, *args, **kwargs)

    def get_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(super().get_delta_channel_history, *args, **kwargs)

    def list(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from super().list(*args, **kwargs)
        except psycopg.Error as exc:
            raise _store_error(self.store.url, exc) from None


async def aopen(url: str, stack: AsyncExitStack) -> AsyncPostgresSaver:
    """Create the tables (on a connection of its own), then the pooled saver; see module."""
    store, database = await asyncio.to_thread(_set_up, url)
    idle = _IdleCheck()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        **_pool_options(store, idle.acheck, idle.areset)
    )
    await pool.open()
    stack.push_async_callback(pool.close)
    return _AsyncSaver(pool, store, database)


def open_sync(url: str, stack: ExitStack) -> PostgresSaver:
    """`aopen` for the synchronous saver."""
    store, database = _set_up(url)
    idle = _IdleCheck()
    pool: ConnectionPool[Any] = ConnectionPool(**_pool_options(store, idle.check, idle.reset))
    pool.open()
    stack.callback(pool.close)
    return _Saver(pool, store, database)


# --- thread locks ----------------------------------------------------------------------------


def _lock_key(thread_id: str) -> int:
    return int.from_bytes(thread_digest(thread_id), "big", signed=True)  # a bigint


_HELD: dict[tuple[tuple[Any, ...], int], _HeldLock] = {}
"""The thread locks this process holds, by (database, key): what the savers check."""


class _HeldLock:
    """A thread's advisory lock on a session of its own, taken again when that session ends.

    Its watcher thread waits for the session's socket to become readable (an idle session
    hears from the server only when it ends it: a restart, `pg_terminate_backend`,
    `idle_session_timeout`) or to fail (TCP keepalives, for a silent peer), then reconnects
    and takes the lock again. `state` is `held`, `retaking` or `lost` (another session has
    it: nothing more may be written for the thread).
    """

    def __init__(self, store: _Store, key: int, thread_id: str) -> None:
        self.store, self.key, self.thread_id = store, key, thread_id
        try:
            conn = self._lock_on_new_session()
        except psycopg.Error as exc:
            raise _open_error(store.url, exc) from None
        if conn is None:
            raise ThreadBusyError(thread_id)
        self.conn = conn
        self.database = _database(conn)
        self.state: Literal["held", "retaking", "lost"] = "held"
        self._changed = threading.Condition()
        self._stop, self._wake = socket.socketpair()
        self._watcher = threading.Thread(
            target=self._watch, name=f"moa-graph thread lock {thread_id}", daemon=True
        )
        self._watcher.start()

    def _lock_on_new_session(self) -> psycopg.Connection[Any] | None:
        """A new session holding the lock; None if another session holds it."""
        conn = psycopg.Connection.connect(self.store.conninfo, autocommit=True)
        try:
            if conn.info.server_version >= 140000:  # the lock must not idle out
                conn.execute("SET idle_session_timeout = 0")
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except BaseException:
            conn.close()
            raise
        if row and row[0]:
            return conn
        conn.close()
        return None

    def intact(self) -> bool:
        """Whether the lock is held, as far as a flag and a poll without waiting can tell."""
        if self.state != "held":
            return False
        try:
            readable, _, _ = select.select([self.conn.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg.Error):
            return False
        return not readable

    def confirm(self) -> None:
        """Wait for the watcher's verdict on a lock that is not plainly intact.

        Raises:
            ThreadBusyError: Another runner holds the thread now.
            CheckpointStoreError: The lock could not be taken again within `connect_timeout`.
        """
        deadline = time.monotonic() + self.store.connect_s
        with self._changed:
            while not self.intact() and self.state != "lost":
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _store_error(
                        self.store.url,
                        f"the session holding thread {self.thread_id}'s lock ended and the "
                        f"lock could not be taken again within {self.store.connect_s:g} s",
                    )
                self._changed.wait(min(left, 0.05))  # `intact` changes without a notify
        if self.state == "lost":
            raise ThreadBusyError(self.thread_id)

    def release(self) -> None:
        """Stop watching and end the session, which releases the lock."""
        _HELD.pop((self.database, self.key), None)
        self._wake.send(b"x")
        self._watcher.join()
        self.conn.close()
        self._stop.close()
        self._wake.close()

    def _watch(self) -> None:
        while self.state == "held":
            try:
                stop = self._stop.fileno()
                readable, _, _ = select.select([self.conn.fileno(), stop], [], [])
            except (OSError, ValueError, psycopg.Error):
                readable = []
            if stop in readable:
                return
            if self._session_alive():
                continue  # something harmless arrived (a notice), now consumed
            self._set("retaking")
            if not self._retake():
                return

    def _session_alive(self) -> bool:
        try:
            self.conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def _retake(self) -> bool:
        """Reconnect until the lock is ours again (True) or another's (False, `lost`)."""
        self.conn.close()
        backoff = _RETAKE_BACKOFF_S[0]
        while True:
            try:
                conn = self._lock_on_new_session()
            except psycopg.Error:
                readable, _, _ = select.select([self._stop], [], [], backoff)
                if readable:
                    return False
                backoff = min(backoff * 2, _RETAKE_BACKOFF_S[1])
                continue
            if conn is None:
                self._set("lost")
                return False
            self.conn = conn
            self._set("held")
            return True

    def _set(self, state: Literal["held", "retaking", "lost"]) -> None:
        with self._changed:
            self.state = state
            self._changed.notify_all()


@contextmanager
def thread_lock(url: str, thread_id: str) -> Iterator[None]:
    """Hold the thread's session advisory lock, watched (see `_HeldLock`), until exit."""
    held = _HeldLock(_store(url), _lock_key(thread_id), thread_id)
    _HELD[(held.database, held.key)] = held
    try:
        yield
    finally:
        held.release()


# --- listing threads -------------------------------------------------------------------------


async def latest_thread_ids(saver: AsyncPostgresSaver, sql: str, limit: int | None) -> list[str]:
    """Run `sql` (thread ids, latest first, `%s` the limit) on the saver's connection."""

    async def query() -> list[str]:
        async with saver.lock, _aconnection(saver.conn) as conn:
            cursor = await conn.execute(sql, (limit,))
            return [str(row["thread_id"]) for row in await cursor.fetchall()]

    if isinstance(saver, _AsyncSaver):
        return await saver.call(query)
    return await query()


@asynccontextmanager
async def _aconnection(conn: Any) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
    if isinstance(conn, AsyncConnectionPool):
        async with conn.connection() as pooled:
            yield pooled
    else:
        yield conn

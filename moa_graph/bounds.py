"""Transports whose requests each end within their timeout, in total.

The OpenAI client's `timeout` (the model's `timeout`, or a direct reference's time left) is,
to httpx, a bound on each step (connect, each write, each read): a server trickling one byte
a second, or streaming chunks forever, would never be cut. These transports
(`BoundedAsyncTransport`, `BoundedTransport`: public here, used by `moa_graph.transport`'s
clients) make a request's read timeout a bound on the whole attempt: connect, send, the
headers and every chunk of the body or stream. A request past it fails with
`httpx2.TimeoutException` (a `TimeoutError` under it), which the OpenAI client retries as a
timeout and then raises as `openai.APITimeoutError`; each retry has a bound of its own.

Async, one timer per request cuts the step still waiting when it fires (`_AsyncSteps`).
Sync, each blocking socket operation (connect, TLS handshake, every write and read) waits at
most the time left: the OpenAI client's httpx transport gets a network backend that lowers
each operation's timeout to it. Residual slack: async, how late the event loop runs the
timer (a loop busy elsewhere); sync, the name lookup before connecting (`getaddrinfo` has no
timeout), and, through a transport other than httpx's own (a caller's, wrapped in
`BoundedTransport`), one read of that transport's read timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx2

__all__ = ["BoundedAsyncTransport", "BoundedTransport"]

_T = TypeVar("_T")


class _Bound:
    """One request's total budget and its deadline (on the clock of whoever enforces it)."""

    __slots__ = ("budget", "deadline", "request")

    def __init__(self, request: httpx2.Request, budget: float, deadline: float) -> None:
        self.request, self.budget, self.deadline = request, budget, deadline

    @staticmethod
    def of(request: httpx2.Request, now: float) -> _Bound | None:
        """The bound of `request`: its read timeout, for the whole attempt (None: unbounded).

        The OpenAI client sets all four httpx timeouts to the request's `timeout`.
        """
        timeouts = request.extensions.get("timeout")
        budget = timeouts.get("read") if isinstance(timeouts, dict) else None
        if not isinstance(budget, int | float):
            return None
        return _Bound(request, budget, now + budget)

    def error(self) -> httpx2.TimeoutException:
        """The timeout to raise: the OpenAI client's kind, with a `TimeoutError` under it."""
        message = f"no complete response within the request's timeout of {self.budget:g} s"
        error = httpx2.TimeoutException(message, request=self.request)
        error.__cause__ = TimeoutError(message)  # `_request_timed_out` looks for one
        error.__suppress_context__ = True
        return error


class BoundedAsyncTransport(httpx2.AsyncBaseTransport):
    """An async transport whose requests each end within their timeout, in total.

    Wraps another transport; a request's read timeout bounds the whole attempt (connect,
    send, headers and every chunk of the body). The default async clients use it over the
    aiohttp transport. To give your own client the same bound:

        >>> import openai  # doctest: +SKIP
        >>> from openai._vendor.httpx_aiohttp.transport import AiohttpTransport
        >>> client = openai.DefaultAioHttpClient(
        ...     transport=BoundedAsyncTransport(AiohttpTransport())
        ... )

    Args:
        transport: The transport that sends the requests.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; raises `httpx2.TimeoutException` when its time runs out."""
        loop = asyncio.get_running_loop()
        bound = _Bound.of(request, loop.time())
        if bound is None:
            return await self.transport.handle_async_request(request)
        steps = _AsyncSteps(bound, loop)
        try:
            response = await steps.run(self.transport.handle_async_request, request)
        except BaseException:
            steps.close()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _BoundedAsyncStream(response.stream, steps)
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()


class _AsyncSteps:
    """Runs one async request's steps (its headers, each chunk) within its deadline.

    One timer per request. When it fires, a step still waiting is cut one loop iteration
    later, after whatever the loop's last poll received has woken it: an answer already on
    the socket is kept even when the loop runs late. Within that next iteration a step that
    need not wait (its data is in) still goes through; from then on every step is cut.
    """

    __slots__ = ("bound", "expired", "loop", "over", "step", "timer")

    def __init__(self, bound: _Bound, loop: asyncio.AbstractEventLoop) -> None:
        self.bound, self.loop = bound, loop
        self.step: asyncio.Timeout | None = None
        self.expired = self.over = False
        self.timer = loop.call_at(bound.deadline, self._expire)

    async def run(self, step: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Await `step(*args)`; raises the request's timeout when it runs out."""
        if self.over:
            raise self.bound.error()
        timer = self.step = asyncio.timeout_at(self.loop.time() if self.expired else None)
        try:
            async with timer:
                return await step(*args)
        except TimeoutError:
            if not timer.expired():
                raise
            raise self.bound.error()  # noqa: B904 - its cause is set: a TimeoutError naming the bound
        finally:
            self.step = None

    def close(self) -> None:
        """The request is done: its timer is not needed any more."""
        self.timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        if self.step is not None:
            self.step.reschedule(self.loop.time())  # runs after this iteration's wake-ups
        self.loop.call_soon(self._end)

    def _end(self) -> None:
        self.over = True


class _BoundedAsyncStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, steps: _AsyncSteps) -> None:
        self._stream, self._steps = stream, steps

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._stream)
        try:
            while True:
                try:
                    chunk = await self._steps.run(anext, chunks)
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            self._steps.close()
            close = getattr(chunks, "aclose", None)
            if close is not None:  # the consumer stopped early: release the body now
                await close()

    async def aclose(self) -> None:
        self._steps.close()
        await self._stream.aclose()


_deadline: ContextVar[float | None] = ContextVar("moa_graph_request_deadline", default=None)
"""The `time.monotonic()` deadline of the sync request being served in this context."""


class BoundedTransport(httpx2.BaseTransport):
    """A sync transport whose requests each end within their timeout, in total.

    Wraps another transport; a request's read timeout bounds the whole attempt. Over httpx's
    own `httpx2.HTTPTransport` every blocking socket operation waits at most the time left;
    over another transport the time left is checked after each of its steps (the headers,
    each chunk), so a step may overrun by up to that transport's own timeout.

        >>> client = httpx2.Client(transport=BoundedTransport(httpx2.HTTPTransport()))

    Args:
        transport: The transport that sends the requests.
    """

    def __init__(self, transport: httpx2.BaseTransport) -> None:
        self.transport = transport
        _bound_socket_operations(transport)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; raises `httpx2.TimeoutException` when its time runs out."""
        bound = _Bound.of(request, time.monotonic())
        if bound is None:
            return self.transport.handle_request(request)
        # No single step may wait longer than the whole request (the pool wait included).
        request.extensions["timeout"] = {
            step: bound.budget if value is None else min(value, bound.budget)
            for step, value in request.extensions["timeout"].items()
        }
        # Headers in just after the deadline: the response is closed, not dropped (which would
        # keep its connection checked out of the pool for good).
        response = _run_within(
            bound, self.transport.handle_request, request, discard=httpx2.Response.close
        )
        assert isinstance(response.stream, httpx2.SyncByteStream)
        response.stream = _BoundedStream(response.stream, bound)
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


class _BoundedStream(httpx2.SyncByteStream):
    def __init__(self, stream: httpx2.SyncByteStream, bound: _Bound) -> None:
        self._stream, self._bound = stream, bound

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._stream)
        while (chunk := _run_within(self._bound, next, chunks, None)) is not None:
            yield chunk

    def close(self) -> None:
        self._stream.close()


def _run_within(
    bound: _Bound,
    step: Callable[..., _T],
    *args: Any,
    discard: Callable[[_T], object] | None = None,
) -> _T:
    """One step of a sync request, its socket operations bounded by the request's deadline.

    A step that ends after the deadline fails too; `discard` releases what it returned.
    """
    token = _deadline.set(bound.deadline)
    try:
        result = step(*args)
    except httpx2.TimeoutException:
        if time.monotonic() < bound.deadline:
            raise  # a step's own timeout, not the request's
        raise bound.error()  # noqa: B904 - see `_Bound.error`
    finally:
        _deadline.reset(token)
    if time.monotonic() >= bound.deadline:
        if discard is not None:
            discard(result)
        raise bound.error()
    return result


def _bound_socket_operations(transport: httpx2.BaseTransport) -> None:
    """Give an `httpx2.HTTPTransport`'s connection pool a backend bounded by the deadline.

    httpcore2's pool has no public way to set a backend after it is built (nor does
    `HTTPTransport` take one), so its `_network_backend` is wrapped; any other transport is
    left as it is (its steps are bounded between them).
    """
    pool: Any = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None and not isinstance(backend, _BoundedNetworkBackend):
        pool._network_backend = _BoundedNetworkBackend(backend)


def _time_left(timeout: float | None) -> float | None:
    """`timeout` lowered to the time left by the current request (raises once none is)."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        import httpcore2  # loaded: this runs inside its connection pool

        raise httpcore2.TimeoutException("the request's time ran out")
    return left if timeout is None else min(timeout, left)


class _BoundedNetworkBackend:
    """An httpcore2 network backend whose every blocking operation waits at most the time left."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _BoundedNetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _time_left(timeout), local_address, socket_options
        )
        return _BoundedNetworkStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> _BoundedNetworkStream:
        stream = self._backend.connect_unix_socket(path, _time_left(timeout), socket_options)
        return _BoundedNetworkStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _BoundedNetworkStream:
    """An httpcore2 network stream whose reads and writes wait at most the time left."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._stream.read(max_bytes, _time_left(timeout))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _BoundedNetworkStream:
        stream = self._stream.start_tls(ssl_context, server_hostname, _time_left(timeout))
        return _BoundedNetworkStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)

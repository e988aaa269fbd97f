"""The built-in models' HTTP clients: shared per base URL, each request bounded in total.

Every built-in model reaches its provider through the OpenAI client, over a client made here.

Each request ends within its timeout, in total: the clients' transports are
`moa_graph.bounds`'s (`BoundedAsyncTransport`, `BoundedTransport`), which is where to import
them from to bound a client of your own.

**Async clients: one per base URL and event loop.** Under `ainvoke` the models of a base URL
share one async client, by default the OpenAI client's aiohttp transport
(`openai.DefaultAioHttpClient`): under load it costs about half the CPU of the default httpx
transport, whose connection pool rescans every connection for every queued request
(benchmarks/findings.md, fix 2). An async client's connections belong to the event loop that
opened them, so clients are kept per loop: a graph reused by a second `asyncio.run` (a
script, a notebook, a test) gets fresh ones. They are closed when their loop shuts down
(`asyncio.run` and `asyncio.Runner` close a loop's async generators on the way out, and one
of those closes the clients), or earlier with `aclose_http_clients()`; a loop closed without
`shutdown_asyncgens()` (a bare `loop.close()`) cannot close them, so call that first there.

**Sync clients: one per base URL for the process** (httpx's client is thread-safe: the
references of a sync fan-out share it from their threads), living as long as the process,
as the OpenAI client's own default does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import (
    AsyncGenerator,
    Callable,
)
from typing import Any

import httpx2

from moa_graph.bounds import BoundedAsyncTransport, BoundedTransport

__all__ = [
    "AsyncHttpClientFactory",
    "aclose_http_clients",
    "async_http_client",
    "closings",
    "sync_http_client",
]

AsyncHttpClientFactory = Callable[[str], Any]
"""Makes the async HTTP client (an `httpx2.AsyncClient`, as the OpenAI client takes) for a
base URL; called once per base URL and event loop."""


# --- shared clients ---------------------------------------------------------------------


class _LoopClients:
    """The clients of one event loop, and the async generator that closes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.clients: dict[tuple[str, AsyncHttpClientFactory], Any] = {}
        self.closer = _close_at_shutdown(loop, self.clients)
        # Run it to its `yield`: from now on the loop tracks it, and its shutdown
        # (`loop.shutdown_asyncgens()`) resumes it to close the clients.
        with contextlib.suppress(StopIteration):
            self.closer.__anext__().send(None)


_per_loop: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
"""A plain dict: an entry holds its loop anyway (the closer's finaliser is the loop's). It is
removed when the loop shuts down, or, for a loop closed without `shutdown_asyncgens`, when
the next loop gets clients."""
_closings = 0
_sync_clients: dict[str, Any] = {}
_sync_lock = threading.Lock()


def closings() -> int:
    """How many times `aclose_http_clients` has run.

    Models holding a client from before the latest closing must be built again.
    """
    return _closings


def async_http_client(
    base_url: str, *, factory: AsyncHttpClientFactory | None = None
) -> Any | None:
    """The running loop's shared async HTTP client for `base_url` (None outside a loop).

    Args:
        base_url: The provider's base URL; models on the same URL share the client.
        factory: Makes the client (default: `openai.DefaultAioHttpClient()`, the OpenAI
            client's defaults with the aiohttp transport, over `BoundedAsyncTransport`).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    make = factory or _default_client
    entry = _per_loop.get(loop)
    if entry is None:
        for closed in [old for old in _per_loop if old.is_closed()]:
            del _per_loop[closed]  # its clients cannot be closed any more; aiohttp warns
        entry = _per_loop[loop] = _LoopClients(loop)
    key = (base_url, make)
    client = entry.clients.get(key)
    if client is None:
        client = entry.clients[key] = make(base_url)
    return client


async def aclose_http_clients() -> None:
    """Close the running loop's shared clients now (the next call opens new ones).

    Call it where an application shuts down without ending its event loop (a server's
    shutdown hook); `asyncio.run` needs nothing.
    """
    global _closings
    _closings += 1
    entry = _per_loop.get(asyncio.get_running_loop())
    if entry is not None:
        await _close(entry.clients)


def sync_http_client(base_url: str) -> Any:
    """The process's shared sync HTTP client for `base_url` (thread-safe, bounded).

    The OpenAI client's httpx client with its defaults, over `BoundedTransport`.
    """
    with _sync_lock:
        client = _sync_clients.get(base_url)
        if client is None:
            client = _sync_clients[base_url] = _bounded_client_types()[1]()
        return client


def _default_client(base_url: str) -> Any:
    return _bounded_client_types()[0]()


@functools.cache
def _bounded_client_types() -> tuple[type[httpx2.AsyncClient], type[httpx2.Client]]:
    """The OpenAI client's default async (aiohttp) and sync (httpx) clients, bounded.

    Made with the first model, so that `import moa_graph` does not load `openai`.
    """
    import openai

    class AsyncClient(openai.DefaultAioHttpClient):
        def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
            return BoundedAsyncTransport(super()._init_transport(*args, **kwargs))

        def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
            return BoundedAsyncTransport(super()._init_proxy_transport(*args, **kwargs))

    class Client(openai.DefaultHttpxClient):
        def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
            return BoundedTransport(super()._init_transport(*args, **kwargs))

        def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
            return BoundedTransport(super()._init_proxy_transport(*args, **kwargs))

    return AsyncClient, Client


async def _close_at_shutdown(
    loop: asyncio.AbstractEventLoop, clients: dict[tuple[str, AsyncHttpClientFactory], Any]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        _per_loop.pop(loop, None)
        await _close(clients)


async def _close(clients: dict[tuple[str, AsyncHttpClientFactory], Any]) -> None:
    closing = list(clients.values())
    clients.clear()
    await asyncio.gather(*(client.aclose() for client in closing), return_exceptions=True)

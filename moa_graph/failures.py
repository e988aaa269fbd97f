"""What a failure says: a one-line description, and the aggregator's error, with no key in either.

A provider's error can echo the request, its key included (a 401 quoting the `Authorization`
header, a gateway's debug dump), and the client's exception object carries the request
itself. So every text made here is scrubbed of every key value the process has read
(`scrub_secrets`) *before* it is cut to length, and a `MoAAggregatorError` never holds the
provider's exception: its `__cause__` is a `ProviderError` standing in for it (its type name,
HTTP status, scrubbed message and, as text, its scrubbed traceback), its `__context__` is
empty, and no frame of its traceback has the provider's exception (or its frames, whose
locals hold the request) among its locals.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import traceback
from types import TracebackType
from typing import NoReturn

from langgraph.errors import GraphBubbleUp

from moa_graph.errors import MoAAggregatorError, ProviderError
from moa_graph.providers import scrub_secrets

__all__ = [
    "aggregator_error",
    "aggregator_failures",
    "describe_error",
    "exception_chain",
    "transport_cause",
]

_MAX_ERROR_CHARS = 300
"""Length of a description in a failed reference's text and a `MoAAggregatorError`."""
_MAX_CAUSE_CHARS = 4000
"""Length of the message a `ProviderError` stand-in keeps: more detail, still bounded."""
_MAX_TRACEBACK_CHARS = 20_000
"""Length of the provider's traceback a `ProviderError` keeps (its end: the failing call)."""
_MALFORMED_RESPONSE = (json.JSONDecodeError, IndexError, KeyError)


def describe_error(exc: BaseException, *, max_chars: int = _MAX_ERROR_CHARS) -> str:
    """`Type: message`, one line, with every known key value scrubbed, then bounded.

    Parsing errors escaping the client (a body that is not JSON, a completion without
    choices) are named as what they are: a malformed response from the provider. So is a
    connection the client calls a timeout: `APIConnectionError: connection refused by
    127.0.0.1:8765 (ConnectionRefusedError: ...)`.

    Example:
        >>> describe_error(ValueError("no   such  model"))
        'ValueError: no such model'
    """
    message, kind = scrub_secrets(str(exc)), type(exc).__name__
    root = transport_cause(exc)
    if root is not None:
        failure = _connection_failure(exc, root)
        if failure is not None:  # the client's own words for it would be wrong
            message, kind = failure, "APIConnectionError"
        message += f" ({type(root).__name__}: {scrub_secrets(str(root))})"
    message = " ".join(message.split())
    if len(message) > max_chars:
        message = message[: max_chars - 3] + "..."
    described = f"{kind}: {message}" if message else kind
    if isinstance(exc, _MALFORMED_RESPONSE):
        described = f"malformed response from the provider ({described})"
    return described


def aggregator_error(label: str, exc: BaseException) -> MoAAggregatorError:
    """The `MoAAggregatorError` for `exc`, caused by a scrubbed `ProviderError` stand-in.

    Raise it outside an `except` block (or use `aggregator_failures`): raised inside one,
    Python would make the provider's exception its `__context__`.
    """
    error = MoAAggregatorError(label, describe_error(exc))
    status = getattr(exc, "status_code", None)
    # Where the call failed as text: the client's frames (their locals hold the request,
    # key included) are not kept.
    where = scrub_secrets("".join(traceback.format_exception(exc)))
    if len(where) > _MAX_TRACEBACK_CHARS:
        where = "...\n" + where[-_MAX_TRACEBACK_CHARS:]
    error.__cause__ = ProviderError(
        describe_error(exc, max_chars=_MAX_CAUSE_CHARS),
        type_name=type(exc).__name__,
        status_code=status if isinstance(status, int) else None,
        provider_traceback=where,
    )
    return error


class aggregator_failures:  # named as the call it is: `with aggregator_failures(label):`
    """Raise an exception of the block as the aggregator's `MoAAggregatorError`.

    LangGraph's own control flow (an interrupt, a `Command` for a parent graph) passes
    through. The raised error's cause chain holds no provider exception (see the module),
    and neither does any frame of its traceback: this is a class, not a `@contextmanager`,
    whose generator and `contextlib` frames would keep the exception as a local.

    Example:
        >>> with aggregator_failures("openai:gpt-5.5"):  # doctest: +SKIP
        ...     reply = model.invoke(messages)
    """

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, GraphBubbleUp):
            return  # none, or one to pass through as it is
        error = aggregator_error(self.label, exc)
        # This frame stays in the error's traceback: it must not hold the exception.
        del kind, exc, tb
        _raise_alone(error)


def transport_cause(exc: BaseException) -> BaseException | None:
    """The transport error under the OpenAI client's generic connection/timeout error.

    The aiohttp transport reports a dropped connection as a timeout ("Request timed out."),
    so the original (`ServerDisconnectedError`, `ConnectionResetError`) is worth naming.
    """
    openai = sys.modules.get("openai")  # not imported until a model is built
    if openai is None or not isinstance(exc, openai.APIConnectionError):
        return None
    causes = [
        link for link in exception_chain(exc)[1:] if not isinstance(link, asyncio.CancelledError)
    ]
    return causes[-1] if causes and str(causes[-1]).strip() else None


def _connection_failure(exc: BaseException, root: BaseException) -> str | None:
    """What went wrong when the client's generic message does not say it, else None.

    The aiohttp transport reports every failure to connect as a timeout ("Request timed
    out."): a refused connection, an unknown host, a dropped one. A real timeout is left to
    the client's words.
    """
    where = _host_of(exc)
    if any(isinstance(link, ConnectionRefusedError) for link in exception_chain(exc)):
        return f"connection refused by {where}" if where else "connection refused"
    if isinstance(root, socket.gaierror):
        return f"cannot resolve host {where}" if where else "cannot resolve host"
    timeout = sys.modules["openai"].APITimeoutError
    if isinstance(exc, timeout) and not isinstance(root, TimeoutError):
        return f"connection to {where} failed" if where else "connection failed"
    return None


def _host_of(exc: BaseException) -> str | None:
    """`host:port` of the request that failed (no path, query or credentials), if known."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]  # openai.APIConnectionError's
        return f"{url.host}:{url.port}" if url.port else str(url.host)
    except Exception:  # no request, or a URL of another shape: the cause is named anyway
        return None


def exception_chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions under it (`__cause__`, else `__context__`), outermost first."""
    links = [exc]
    while (under := links[-1].__cause__ or links[-1].__context__) is not None:
        if any(under is link for link in links):
            break
        links.append(under)
    return links


def _raise_alone(error: MoAAggregatorError) -> NoReturn:
    """Raise `error` from inside an `except` block without the handled exception as context."""
    try:
        raise error
    except MoAAggregatorError:
        # The raise above made the provider's exception (being handled) its __context__;
        # a bare re-raise does not set it again.
        error.__context__ = None
        raise

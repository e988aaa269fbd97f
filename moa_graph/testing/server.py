"""An OpenAI-compatible stand-in HTTP server for offline tests and demos.

`StubServer` runs an `aiohttp` server on loopback in a background thread and answers
`POST /v1/chat/completions` (plain and streamed, with tool calls) deterministically, so the real
`langchain_openai.ChatOpenAI` client can talk to it with any API key. Per model name it can add
latency, return a fixed reply, or inject faults (error status, dropped connection, hang, broken
body, cut stream, empty choices, invalid tool arguments, a trickle of one byte at a time, a
stream that never ends; see `FaultKind`): on every request, on the first N, or
on a seeded random share of them (`rate`). `serve` runs the same server in the current event
loop until cancelled, for `moa-graph stub-server`.

Example:
    >>> with StubServer(models={"slow": {"latency": 0.2}}) as url:  # doctest: +SKIP
    ...     ChatOpenAI(model="slow", base_url=url, api_key="test").invoke("What is 2 + 3?")

Control endpoints next to the OpenAI ones: `GET /_stub/stats`, `GET /_stub/requests?model=`,
`POST /_stub/reset` and `POST /_stub/config` (`{"models": {...}, "default": {...}}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from moa_graph.testing._stub_behaviour import (
    Answer,
    BehaviourLike,
    Fault,
    ModelBehaviour,
    StubState,
    bad_tool_args_answer,
    completion_body,
    completion_chunks,
    error_body,
    load_stub_config,
    plan_answer,
)

__all__ = ["Fault", "ModelBehaviour", "StubServer", "load_stub_config", "serve"]

_BACKLOG = 1024
# Small, so a stop with hanging requests in flight cancels them instead of waiting for them.
_SHUTDOWN_TIMEOUT = 0.25
_THREAD_TIMEOUT = 10.0
_OWNER = "moa-graph-stub"
_CUT_AFTER_CHUNKS = 3
_MALFORMED = b'{"id": "chatcmpl-stub", "object": "chat.completion", "choices": [{"index": 0,'
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


_STATE = web.AppKey("moa_graph_stub_state", StubState)


# --- HTTP handlers -------------------------------------------------------------------------


def _completion_id(number: int) -> str:
    # Unique across servers and restarts: LangGraph's `add_messages` treats two messages with
    # one id as one message, and a resumed thread may hold answers from an earlier server.
    return f"chatcmpl-stub{number}-{uuid.uuid4().hex[:12]}"


def _error(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    type_ = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return web.json_response(error_body(message, type_=type_), status=status, headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain-text 404/405 into the OpenAI error shape clients expect."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")


def _drop_connection(request: web.Request, *, flush: bool) -> None:
    """Close the client's connection without (finishing) a response."""
    transport = request.transport
    if transport is None:
        return
    # close() still sends what was written (a cut stream's first chunks); abort() drops it all.
    if flush:
        transport.close()
    else:
        transport.abort()


def _sse(data: Mapping[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


async def _send_events(
    request: web.Request,
    events: Iterable[bytes],
    *,
    cut_after: int | None = None,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for index, event in enumerate(events):
        if cut_after is not None and index >= cut_after:
            _drop_connection(request, flush=True)
            return response
        await response.write(event)
    await response.write_eof()
    return response


async def _answer(
    request: web.Request,
    body: dict[str, Any],
    answer: Answer,
    *,
    model: str,
    number: int,
    with_choices: bool = True,
    cut_after: int | None = None,
) -> web.StreamResponse:
    """Send `answer` as one completion or as an SSE stream, whichever the request asked for."""
    completion_id, created = _completion_id(number), int(time.time())
    if not body.get("stream"):
        payload = completion_body(
            body,
            answer,
            model=model,
            completion_id=completion_id,
            created=created,
            with_choices=with_choices,
        )
        return web.json_response(payload)
    chunks: Iterable[Mapping[str, Any]] = completion_chunks(
        body, answer, model=model, completion_id=completion_id, created=created
    )
    if not with_choices:
        # Keep just the first chunk, stripped of its choice: a stream that never carries one.
        chunks = [{**chunk, "choices": []} for chunk in itertools.islice(chunks, 1)]
    events = itertools.chain((_sse(chunk) for chunk in chunks), [_sse("[DONE]")])
    return await _send_events(request, events, cut_after=cut_after)


async def _apply_fault(
    request: web.Request,
    body: dict[str, Any],
    fault: Fault,
    behaviour: ModelBehaviour,
    *,
    model: str,
    number: int,
) -> web.StreamResponse:
    streaming = bool(body.get("stream"))
    if fault.kind == "status":
        retry_after = fault.retry_after
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        message = fault.message or f"stub fault: HTTP {fault.status} for model {model!r}"
        return _error(fault.status, message, headers=headers)
    if fault.kind == "reset" or (fault.kind == "cut_stream" and not streaming):
        _drop_connection(request, flush=False)
        return web.Response()  # never reaches the client; aiohttp discards it quietly
    if fault.kind == "malformed":
        if streaming:
            events = [
                _sse({"id": _completion_id(number), "choices": []}),
                _sse(_MALFORMED.decode()),
                _sse("[DONE]"),
            ]
            return await _send_events(request, events)
        return web.Response(body=_MALFORMED, content_type="application/json")
    if fault.kind == "bad_tool_args":
        return await _answer(request, body, bad_tool_args_answer(body), model=model, number=number)
    answer = plan_answer(body, model=model, reply=behaviour.reply)
    if fault.kind == "hang":
        # Cancelled when the client disconnects (handler_cancellation) or the server stops.
        await asyncio.sleep(fault.hang_s)
        return await _answer(request, body, answer, model=model, number=number)
    if fault.kind == "no_choices":
        return await _answer(request, body, answer, model=model, number=number, with_choices=False)
    if fault.kind == "trickle":
        return await _trickle(request, body, answer, model=model, number=number, fault=fault)
    if fault.kind == "endless_stream":
        return await _endless(request, body, answer, model=model, number=number, fault=fault)
    return await _answer(
        request, body, answer, model=model, number=number, cut_after=_CUT_AFTER_CHUNKS
    )


async def _trickle(
    request: web.Request,
    body: dict[str, Any],
    answer: Answer,
    *,
    model: str,
    number: int,
    fault: Fault,
) -> web.StreamResponse:
    """Send the whole response, status line and headers included, one byte per `interval_s`.

    Each read of the client's gets a byte in time, so only a bound on the whole request ends
    it. Written to the connection directly (aiohttp sends its headers at once), then closed.
    """
    completion_id, created = _completion_id(number), int(time.time())
    if body.get("stream"):
        chunks = completion_chunks(
            body, answer, model=model, completion_id=completion_id, created=created
        )
        payload = b"".join([*(_sse(chunk) for chunk in chunks), _sse("[DONE]")])
        content_type = "text/event-stream"
    else:
        completion = completion_body(
            body, answer, model=model, completion_id=completion_id, created=created
        )
        payload, content_type = json.dumps(completion).encode(), "application/json"
    data = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}"
        "\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    transport = request.transport
    for index in range(len(data)):  # a disconnect cancels this handler (handler_cancellation)
        if transport is None or transport.is_closing():
            break
        transport.write(data[index : index + 1])
        await asyncio.sleep(fault.interval_s)
    _drop_connection(request, flush=True)
    return web.Response()  # never reaches the client; aiohttp discards it quietly


async def _endless(
    request: web.Request,
    body: dict[str, Any],
    answer: Answer,
    *,
    model: str,
    number: int,
    fault: Fault,
) -> web.StreamResponse:
    """A response that never ends: a chunk every `interval_s`, until the client goes away.

    Streaming, SSE content chunks and never `[DONE]`; otherwise a completion's JSON whose
    `content` string never closes.
    """
    streaming = bool(body.get("stream"))
    completion_id = _completion_id(number)
    if streaming:
        first = next(
            completion_chunks(
                body, answer, model=model, completion_id=completion_id, created=int(time.time())
            )
        )
        more = {**first, "choices": [{**first["choices"][0], "delta": {"content": "more "}}]}
        opening, piece = _sse(first), _sse(more)
    else:
        opening = json.dumps({"id": completion_id, "object": "chat.completion"}).encode()[:-1]
        opening += b', "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
        piece = b"more "
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream" if streaming else "application/json",
            "Cache-Control": "no-cache",
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):  # the client went away mid-write
        await response.write(opening)
        while True:  # a disconnect or the server's stop cancels this handler
            await asyncio.sleep(fault.interval_s)
            await response.write(piece)
    return response


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "request body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error(400, "you must provide a model parameter")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(message, dict) for message in messages)
    ):
        return _error(400, "'messages' must be a non-empty list of message objects")
    number, behaviour, fault, delay = state.admit(model, body)
    try:
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is not None:
            return await _apply_fault(request, body, fault, behaviour, model=model, number=number)
        answer = plan_answer(body, model=model, reply=behaviour.reply)
        return await _answer(request, body, answer, model=model, number=number)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects (handler_cancellation).
        state.disconnected(model)
        raise


async def _list_models(request: web.Request) -> web.Response:
    names = request.app[_STATE].model_names()
    data = [{"id": name, "object": "model", "created": 0, "owned_by": _OWNER} for name in names]
    return web.json_response({"object": "list", "data": data})


async def _stats(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    counts = state.stats()
    return web.json_response(
        {"requests": counts, "total": sum(counts.values()), "disconnects": state.disconnects()}
    )


async def _recorded(request: web.Request) -> web.Response:
    model = request.query.get("model")
    return web.json_response({"model": model, "requests": request.app[_STATE].requests(model)})


async def _reset(request: web.Request) -> web.Response:
    request.app[_STATE].reset()
    return web.json_response({"ok": True})


async def _config(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "request body is not valid JSON")
    if not isinstance(body, dict) or not set(body) <= {"models", "default", "replace"}:
        return _error(400, "expected an object with 'models', 'default' and/or 'replace'")
    models = body.get("models") or {}
    if not isinstance(models, dict):
        return _error(400, "'models' must be an object of model name → behaviour")
    try:
        state.configure(models, default=body.get("default"), replace=bool(body.get("replace")))
    except (ValidationError, TypeError, ValueError) as exc:
        return _error(400, f"invalid stub config: {exc}")
    return web.json_response({"ok": True, "models": state.model_names()})


def _build_app(state: StubState) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[_STATE] = state
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/_stub/stats", _stats)
    app.router.add_get("/_stub/requests", _recorded)
    app.router.add_post("/_stub/reset", _reset)
    app.router.add_post("/_stub/config", _config)
    return app


@contextlib.asynccontextmanager
async def _running(state: StubState, *, host: str, port: int) -> AsyncIterator[str]:
    """Serve `state` on `host:port` for the duration of the block; yields the `/v1` base URL."""
    runner = web.AppRunner(
        _build_app(state),
        access_log=None,
        # Lets a hanging handler end when its client gives up, not only at shutdown.
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=_BACKLOG)
        await site.start()
        bound_port = runner.addresses[0][1]  # the real port when `port=0`
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}/v1"
    finally:
        await runner.cleanup()


# --- public API ----------------------------------------------------------------------------


class StubServer:
    """The stand-in server in a background thread with its own event loop.

    Use it as a context manager (`with StubServer(...) as url:`) or call `start`/`stop`.
    Both are idempotent, and the server can be started again after a stop (on a new port
    when `port=0`).

    Args:
        models: Behaviour per model name (a `ModelBehaviour` or its mapping form).
        default: Behaviour for model names not in `models`; else the plain default behaviour.
        host: Interface to bind; loopback by default.
        port: TCP port; `0` picks a free one (read it back from `url`).
        seed: Seed of the RNG that draws `(lo, hi)` latencies, and of the per-model draws of
            `rate` faults.
    """

    def __init__(
        self,
        *,
        models: Mapping[str, BehaviourLike] | None = None,
        default: BehaviourLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        self._state = StubState(models=models, default=default, seed=seed)
        self._host = host
        self._port = port
        self._lifecycle = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._url: str | None = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL including `/v1`, e.g. `http://127.0.0.1:43123/v1`.

        Raises:
            RuntimeError: When the server is not running.
        """
        if self._url is None:
            raise RuntimeError("StubServer is not running; call start() first")
        return self._url

    def start(self) -> str:
        """Start serving (no-op when already running).

        Returns:
            The base URL including `/v1`.

        Raises:
            OSError: When the port cannot be bound.
            RuntimeError: When the server thread does not come up in time.
        """
        with self._lifecycle:
            if self._url is not None:
                return self._url
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._thread_main,
                args=(ready, failure),
                name="moa-graph-stub-server",
                daemon=True,  # a forgotten stop() must not keep the interpreter alive
            )
            thread.start()
            if not ready.wait(_THREAD_TIMEOUT):
                raise RuntimeError("StubServer did not start in time")
            if failure:
                thread.join(_THREAD_TIMEOUT)
                raise failure[0]
            self._thread = thread
            return self.url

    def stop(self) -> None:
        """Stop serving, cancelling requests in flight, and join the thread (no-op if stopped)."""
        with self._lifecycle:
            thread, loop, stop_event = self._thread, self._loop, self._stop_event
            self._thread = self._loop = self._stop_event = None
            self._url = None
            if thread is None:
                return
            if loop is not None and stop_event is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(stop_event.set)
            thread.join(_THREAD_TIMEOUT)

    def configure(
        self,
        models: Mapping[str, BehaviourLike],
        *,
        default: BehaviourLike | None = None,
        replace: bool = False,
    ) -> None:
        """Set per-model behaviour at runtime; safe to call from any thread while serving.

        Args:
            models: Behaviour per model name; merged into the current table (a name given
                here replaces its old behaviour and restarts its fault `times` budget).
            default: New behaviour for unlisted model names; `None` keeps the current one.
            replace: Drop the current table (and default) first instead of merging.

        Raises:
            pydantic.ValidationError: When a behaviour is invalid; nothing is changed then.
        """
        self._state.configure(models, default=default, replace=replace)

    def stats(self) -> dict[str, int]:
        """Requests received per model name since start or the last `reset`."""
        return self._state.stats()

    def disconnects(self) -> dict[str, int]:
        """Requests per model whose client disconnected before the answer was sent."""
        return self._state.disconnects()

    def requests(self, model: str | None = None) -> list[dict[str, Any]]:
        """Recorded request bodies in arrival order (the last 200 per model).

        Args:
            model: Only this model's requests; all models when `None`.
        """
        return self._state.requests(model)

    def reset(self) -> None:
        """Clear stats, recorded requests and the fault `times` counters."""
        self._state.reset()

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        async def main() -> None:
            stop_event = asyncio.Event()
            try:
                async with _running(self._state, host=self._host, port=self._port) as url:
                    self._loop, self._stop_event, self._url = (
                        asyncio.get_running_loop(),
                        stop_event,
                        url,
                    )
                    ready.set()
                    await stop_event.wait()
            except BaseException as exc:
                if not ready.is_set():
                    failure.append(exc)
                    return
                raise
            finally:
                ready.set()

        asyncio.run(main())


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    models: Mapping[str, BehaviourLike] | None = None,
    default: BehaviourLike | None = None,
    seed: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the stand-in server in the current event loop until cancelled.

    Args:
        host: Interface to bind.
        port: TCP port; `0` picks a free one (reported through `on_ready`).
        models: Behaviour per model name.
        default: Behaviour for model names not in `models`.
        seed: Seed of the latency RNG and of the `rate` fault draws.
        on_ready: Called once with the base URL (including `/v1`) when the server listens.
    """
    state = StubState(models=models, default=default, seed=seed)
    async with _running(state, host=host, port=port) as url:
        if on_ready is not None:
            on_ready(url)
        await asyncio.Event().wait()

"""An OpenAI-compatible stand-in HTTP server for offline tests and demos.

`StubServer` runs an `aiohttp` server on loopback in a background thread and answers
`POST /v1/chat/completions` and `POST /v1/responses` (plain and streamed, with tool calls)
deterministically, so the real `langchain_openai.ChatOpenAI` client, the `openai` SDK and
litellm can talk to it with any API key. Requests are validated as OpenAI does
(`moa_graph.testing._validation`: a 400 in OpenAI's error shape), and answered by a
deterministic policy that honours `tools`, `tool_choice`, `parallel_tool_calls`,
`response_format`, `stop`, `max_tokens`/`max_completion_tokens`, `n`, `seed` and
`stream_options.include_usage` (`moa_graph.testing._answer`). Per model name it can add
latency (fixed, a uniform range, or heavy-tailed: `{"lognormal": {"median": 2.0, "sigma":
0.7}}`, drawn per request from the server's seeded RNG), return a fixed reply, replay a
`script` of replies, or inject faults (error status, dropped connection, hang, broken body,
cut stream, empty choices, invalid tool arguments, a trickle of one byte at a time, a stream
that never ends; see `FaultKind`): on every request, on the first N, or on a seeded random
share of them (`rate`). `serve` runs the same server in
the current event loop until cancelled, for `moa-graph stub-server`.

Example:
    >>> with StubServer(models={"slow": {"latency": 0.2}}) as url:  # doctest: +SKIP
    ...     ChatOpenAI(model="slow", base_url=url, api_key="test").invoke("What is 2 + 3?")

`GET /v1/models` lists the configured model names; `GET /v1/models/{id}` answers for any name.
Control endpoints next to the OpenAI ones: `GET /_stub/stats`, `GET /_stub/requests?model=`,
`POST /_stub/reset` and `POST /_stub/config` (`{"models": {...}, "default": {...}}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from moa_graph.testing._answer import plan_answer
from moa_graph.testing._faults import apply_fault
from moa_graph.testing._responses import chat_request_of, complete_response, response_events
from moa_graph.testing._sending import completion_id, error, send_answer, send_events, sse
from moa_graph.testing._stub_behaviour import (
    BehaviourLike,
    Fault,
    ModelBehaviour,
    StubState,
    load_stub_config,
)
from moa_graph.testing._validation import InvalidRequest, validate_chat_request

__all__ = ["Fault", "ModelBehaviour", "StubServer", "load_stub_config", "serve"]

_BACKLOG = 1024
# Small, so a stop with hanging requests in flight cancels them instead of waiting for them.
_SHUTDOWN_TIMEOUT = 0.25
_THREAD_TIMEOUT = 10.0
_OWNER = "moa-graph-stub"


_STATE = web.AppKey("moa_graph_stub_state", StubState)


# --- HTTP handlers -------------------------------------------------------------------------


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain-text 404/405 into the OpenAI error shape clients expect."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, f"{exc.reason}: {request.method} {request.path}")


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("request body is not valid JSON") from None


def _invalid(exc: InvalidRequest) -> web.Response:
    return error(400, exc.message, param=exc.param, code=exc.code)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    try:
        body = await _json_body(request)
        validate_chat_request(body)
    except InvalidRequest as exc:
        return _invalid(exc)
    model = body["model"]
    admission = state.admit(model, body)
    try:
        if admission.delay > 0:
            await asyncio.sleep(admission.delay)
        if admission.fault is not None:
            return await apply_fault(
                request,
                body,
                admission.fault,
                admission.behaviour,
                model=model,
                number=admission.number,
            )
        answer = plan_answer(
            body, model=model, reply=admission.behaviour.reply, scripted=admission.scripted
        )
        return await send_answer(request, body, answer, model=model, number=admission.number)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects (handler_cancellation).
        state.disconnected(model)
        raise


async def _responses(request: web.Request) -> web.StreamResponse:
    """`POST /v1/responses`: latency and the `status`, `reset` and `hang` faults apply."""
    state = request.app[_STATE]
    try:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        chat = chat_request_of(body)
        validate_chat_request(chat)
    except InvalidRequest as exc:
        return _invalid(exc)
    model = body["model"]
    admission = state.admit(model, body)
    try:
        if admission.delay > 0:
            await asyncio.sleep(admission.delay)
        fault = admission.fault
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(fault.hang_s)
        elif fault is not None and fault.kind in {"status", "reset"}:
            return await apply_fault(
                request, body, fault, admission.behaviour, model=model, number=admission.number
            )
        answer = plan_answer(
            chat, model=model, reply=admission.behaviour.reply, scripted=admission.scripted
        )
        response_id, created = completion_id(admission.number, "resp"), int(time.time())
        if not body.get("stream"):
            return web.json_response(
                complete_response(
                    body, chat, answer, model=model, response_id=response_id, created=created
                )
            )
        events = response_events(
            body, chat, answer, model=model, response_id=response_id, created=created
        )
        return await send_events(request, (sse(event, event=event["type"]) for event in events))
    except asyncio.CancelledError:
        state.disconnected(model)
        raise


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": _OWNER}


async def _list_models(request: web.Request) -> web.Response:
    names = request.app[_STATE].model_names()
    return web.json_response({"object": "list", "data": [_model_object(n) for n in names]})


async def _retrieve_model(request: web.Request) -> web.Response:
    """`GET /v1/models/{id}`: the stand-in answers every model name, so every id exists."""
    return web.json_response(_model_object(request.match_info["model"]))


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
        body = await _json_body(request)
    except InvalidRequest as exc:
        return _invalid(exc)
    if not isinstance(body, dict) or not set(body) <= {"models", "default", "replace"}:
        return error(400, "expected an object with 'models', 'default' and/or 'replace'")
    models = body.get("models") or {}
    if not isinstance(models, dict):
        return error(400, "'models' must be an object of model name → behaviour")
    try:
        state.configure(models, default=body.get("default"), replace=bool(body.get("replace")))
    except (ValidationError, TypeError, ValueError) as exc:
        return error(400, f"invalid stub config: {exc}")
    return web.json_response({"ok": True, "models": state.model_names()})


def _build_app(state: StubState) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[_STATE] = state
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/responses", _responses)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model}", _retrieve_model)
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
        seed: Seed of the RNG that draws `(lo, hi)` and `lognormal` latencies, and of the
            per-model draws of `rate` faults.
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
        seed: Seed of the latency RNG (ranges, `lognormal`) and of the `rate` fault draws.
        on_ready: Called once with the base URL (including `/v1`) when the server listens.
    """
    state = StubState(models=models, default=default, seed=seed)
    async with _running(state, host=host, port=port) as url:
        if on_ready is not None:
            on_ready(url)
        await asyncio.Event().wait()

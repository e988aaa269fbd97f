"""Putting an answer on the wire over HTTP: OpenAI-shaped errors, JSON bodies and SSE streams."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from moa_graph.testing._answer import Answer
from moa_graph.testing._wire import completion_body, completion_chunks, error_body

__all__ = ["completion_id", "drop_connection", "error", "send_answer", "send_events", "sse"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def completion_id(number: int, prefix: str = "chatcmpl") -> str:
    """A response id unique across servers and restarts.

    LangGraph's `add_messages` treats two messages with one id as one message, and a resumed
    thread may hold answers from an earlier server.
    """
    return f"{prefix}-stub{number}-{uuid.uuid4().hex[:12]}"


def error(
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    """An error response in OpenAI's JSON shape, typed by its status."""
    type_ = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = error_body(message, type_=type_, param=param, code=code)
    return web.json_response(body, status=status, headers=headers)


def drop_connection(request: web.Request, *, flush: bool) -> None:
    """Close the client's connection without (finishing) a response."""
    transport = request.transport
    if transport is None:
        return
    # close() still sends what was written (a cut stream's first chunks); abort() drops it all.
    if flush:
        transport.close()
    else:
        transport.abort()


def sse(data: Mapping[str, Any] | str, *, event: str | None = None) -> bytes:
    """One server-sent event (`event:` line only when named, as the Responses API sends)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


async def send_events(
    request: web.Request,
    events: Iterable[bytes],
    *,
    cut_after: int | None = None,
) -> web.StreamResponse:
    """Stream `events`; with `cut_after`, drop the connection after that many."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for index, event in enumerate(events):
        if cut_after is not None and index >= cut_after:
            drop_connection(request, flush=True)
            return response
        await response.write(event)
    await response.write_eof()
    return response


async def send_answer(
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
    answer_id, created = completion_id(number), int(time.time())
    if not body.get("stream"):
        payload = completion_body(
            body,
            answer,
            model=model,
            completion_id=answer_id,
            created=created,
            with_choices=with_choices,
        )
        return web.json_response(payload)
    chunks: Iterable[Mapping[str, Any]] = completion_chunks(
        body, answer, model=model, completion_id=answer_id, created=created
    )
    if not with_choices:
        # Keep just the first chunk, stripped of its choice: a stream that never carries one.
        chunks = [{**chunk, "choices": []} for chunk in itertools.islice(chunks, 1)]
    events = itertools.chain((sse(chunk) for chunk in chunks), [sse("[DONE]")])
    return await send_events(request, events, cut_after=cut_after)

"""The faults a model can be given (`Fault`), played out on the HTTP connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from moa_graph.testing._answer import Answer, bad_tool_args_answer, plan_answer
from moa_graph.testing._sending import (
    completion_id,
    drop_connection,
    error,
    send_answer,
    send_events,
    sse,
)
from moa_graph.testing._stub_behaviour import Fault, ModelBehaviour
from moa_graph.testing._wire import completion_body, completion_chunks

__all__ = ["apply_fault"]

_CUT_AFTER_CHUNKS = 3
_MALFORMED = b'{"id": "chatcmpl-stub", "object": "chat.completion", "choices": [{"index": 0,'


async def apply_fault(
    request: web.Request,
    body: dict[str, Any],
    fault: Fault,
    behaviour: ModelBehaviour,
    *,
    model: str,
    number: int,
) -> web.StreamResponse:
    """Answer a chat request with `fault` instead of (or after) its normal answer."""
    streaming = bool(body.get("stream"))
    if fault.kind == "status":
        retry_after = fault.retry_after
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        message = fault.message or f"stub fault: HTTP {fault.status} for model {model!r}"
        return error(fault.status, message, headers=headers)
    if fault.kind == "reset" or (fault.kind == "cut_stream" and not streaming):
        drop_connection(request, flush=False)
        return web.Response()  # never reaches the client; aiohttp discards it quietly
    if fault.kind == "malformed":
        if streaming:
            events = [
                sse({"id": completion_id(number), "choices": []}),
                sse(_MALFORMED.decode()),
                sse("[DONE]"),
            ]
            return await send_events(request, events)
        return web.Response(body=_MALFORMED, content_type="application/json")
    if fault.kind == "bad_tool_args":
        return await send_answer(
            request, body, bad_tool_args_answer(body), model=model, number=number
        )
    answer = plan_answer(body, model=model, reply=behaviour.reply)
    if fault.kind == "hang":
        # Cancelled when the client disconnects (handler_cancellation) or the server stops.
        await asyncio.sleep(fault.hang_s)
        return await send_answer(request, body, answer, model=model, number=number)
    if fault.kind == "no_choices":
        return await send_answer(
            request, body, answer, model=model, number=number, with_choices=False
        )
    if fault.kind == "trickle":
        return await _trickle(request, body, answer, model=model, number=number, fault=fault)
    if fault.kind == "endless_stream":
        return await _endless(request, body, answer, model=model, number=number, fault=fault)
    return await send_answer(
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
    answer_id, created = completion_id(number), int(time.time())
    if body.get("stream"):
        chunks = completion_chunks(
            body, answer, model=model, completion_id=answer_id, created=created
        )
        payload = b"".join([*(sse(chunk) for chunk in chunks), sse("[DONE]")])
        content_type = "text/event-stream"
    else:
        completion = completion_body(
            body, answer, model=model, completion_id=answer_id, created=created
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
    drop_connection(request, flush=True)
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
    answer_id = completion_id(number)
    if streaming:
        first = next(
            completion_chunks(
                body, answer, model=model, completion_id=answer_id, created=int(time.time())
            )
        )
        more = {**first, "choices": [{**first["choices"][0], "delta": {"content": "more "}}]}
        opening, piece = sse(first), sse(more)
    else:
        opening = json.dumps({"id": answer_id, "object": "chat.completion"}).encode()[:-1]
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

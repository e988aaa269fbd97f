"""Tests of the OpenAI-compatible stand-in server, driven through the real clients on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from moa_graph.errors import ConfigError
from moa_graph.testing._request import find_expression, safe_eval
from moa_graph.testing.server import ModelBehaviour, StubServer, load_stub_config, serve

QUESTION = "What is 17 * 23?"


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return "391"


def _chat(url: str, model: str, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=url, api_key="test", max_retries=0, **options)


def _root(url: str) -> str:
    return url.removesuffix("/v1")


def _body(model: str, text: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _joined(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged


# --- default behaviour ---------------------------------------------------------------------


def test_invoke_answer_names_the_model_and_quotes_the_question() -> None:
    with StubServer() as url:
        answer = _chat(url, "ref-a").invoke("Tell me about rivers")
    assert isinstance(answer.content, str)
    assert answer.content.startswith("[ref-a]")
    assert "Tell me about rivers" in answer.content


def test_plain_answer_includes_the_evaluated_arithmetic() -> None:
    with StubServer() as url:
        answer = _chat(url, "ref-a").invoke(QUESTION)
    assert "17 * 23 = 391" in str(answer.content)


def test_long_question_is_truncated_in_the_answer() -> None:
    question = "word " * 100
    with StubServer() as url:
        answer = str(_chat(url, "m").invoke(question).content)
    assert "..." in answer
    assert len(answer) < 120


def test_content_part_lists_are_read_as_text() -> None:
    message = HumanMessage(content=[{"type": "text", "text": "What is 2 + 3?"}])
    with StubServer() as url:
        answer = _chat(url, "m").invoke([message])
    assert "2 + 3 = 5" in str(answer.content)


def test_stream_yields_several_chunks_that_join_to_the_invoke_text() -> None:
    with StubServer() as url:
        llm = _chat(url, "ref-a")
        full = llm.invoke(QUESTION).content
        chunks = list(llm.stream(QUESTION))
    assert len([c for c in chunks if c.content]) > 3
    assert "".join(str(c.content) for c in chunks) == full


def test_stream_reports_usage_with_stream_usage() -> None:
    with StubServer() as url:
        chunks = list(_chat(url, "m", stream_usage=True).stream("one two three"))
    usage = _joined(chunks).usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == 3
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_invoke_usage_counts_whitespace_words() -> None:
    with StubServer(models={"m": {"reply": "four words right here"}}) as url:
        usage = _chat(url, "m").invoke("one two three").usage_metadata
    assert usage is not None
    assert (usage["input_tokens"], usage["output_tokens"]) == (3, 4)


def test_bind_tools_invoke_calls_calculator_with_the_expression() -> None:
    with StubServer() as url:
        answer = _chat(url, "agg").bind_tools([calculator]).invoke(QUESTION)
    assert isinstance(answer, AIMessage)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [
        ("calculator", {"expression": "17 * 23"})
    ]
    assert answer.tool_calls[0]["id"]
    assert answer.response_metadata["finish_reason"] == "tool_calls"


def test_bind_tools_stream_calls_calculator_with_the_expression() -> None:
    with StubServer() as url:
        chunks = list(_chat(url, "agg").bind_tools([calculator]).stream(QUESTION))
    merged = _joined(chunks)
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("calculator", {"expression": "17 * 23"})
    ]


def test_tools_without_calculator_get_a_plain_answer() -> None:
    @tool
    def search(query: str) -> str:
        """Search the web."""
        return ""

    with StubServer() as url:
        answer = _chat(url, "agg").bind_tools([search]).invoke(QUESTION)
    assert isinstance(answer, AIMessage)
    assert answer.tool_calls == []
    assert "17 * 23 = 391" in str(answer.content)


def test_tool_result_is_echoed_in_the_answer() -> None:
    with StubServer() as url:
        llm = _chat(url, "agg").bind_tools([calculator])
        call = llm.invoke(QUESTION)
        assert isinstance(call, AIMessage)
        tool_message = ToolMessage("391", tool_call_id=call.tool_calls[0]["id"])
        answer = llm.invoke([HumanMessage(QUESTION), call, tool_message])
    assert answer.content == "The result is 391."


def test_fixed_reply_overrides_the_default_answer() -> None:
    with StubServer(models={"m": ModelBehaviour(reply="Fixed.")}) as url:
        assert _chat(url, "m").invoke(QUESTION).content == "Fixed."


def test_default_behaviour_applies_to_unlisted_models_only() -> None:
    with StubServer(models={"listed": {}}, default={"reply": "fallback"}) as url:
        assert _chat(url, "other").invoke("hi").content == "fallback"
        assert str(_chat(url, "listed").invoke("hi").content).startswith("[listed]")


@pytest.mark.parametrize(
    ("text", "expression", "value"),
    [
        ("What is 17 * 23?", "17 * 23", "391"),
        ("Compute (2 + 3) * 4.", "(2 + 3) * 4", "20"),
        ("and 7 / 2 please", "7 / 2", "3.5"),
        ("2 ** 10", "2 ** 10", "1024"),
    ],
)
def test_arithmetic_is_found_and_evaluated(text: str, expression: str, value: str) -> None:
    assert find_expression(text) == expression
    assert safe_eval(expression) == value


@pytest.mark.parametrize("text", ["version 2.0 is out", "see (above)", "no numbers here"])
def test_text_without_an_operator_has_no_expression(text: str) -> None:
    assert find_expression(text) is None


@pytest.mark.parametrize("expression", ["__import__('os')", "1 / 0", "9 ** 9 ** 9", "a + 1"])
def test_safe_eval_refuses_non_arithmetic_and_runaway_values(expression: str) -> None:
    assert safe_eval(expression) is None


# --- bookkeeping ---------------------------------------------------------------------------


def test_stats_count_requests_per_model_including_faulted_ones() -> None:
    models = {"broken": {"fault": {"kind": "status"}}}
    with StubServer(models=models) as url:
        _chat(url, "a").invoke("x")
        _chat(url, "a").invoke("y")
        _chat(url, "b").invoke("z")
        with pytest.raises(openai.InternalServerError):
            _chat(url, "broken").invoke("w")
        stub_stats = httpx.get(f"{_root(url)}/_stub/stats").json()
    assert stub_stats == {
        "requests": {"a": 2, "b": 1, "broken": 1},
        "total": 4,
        "disconnects": {},
    }


def test_stats_method_matches_the_http_endpoint() -> None:
    stub = StubServer()
    with stub as url:
        _chat(url, "a").invoke("x")
        assert stub.stats() == httpx.get(f"{_root(url)}/_stub/stats").json()["requests"]


def test_recorded_requests_contain_the_messages_sent() -> None:
    stub = StubServer()
    with stub as url:
        _chat(url, "a").invoke([HumanMessage("first question")])
        _chat(url, "b").invoke([HumanMessage("second question")])
        over_http = httpx.get(f"{_root(url)}/_stub/requests", params={"model": "b"}).json()
    assert [r["messages"][-1]["content"] for r in stub.requests()] == [
        "first question",
        "second question",
    ]
    assert [r["model"] for r in stub.requests("a")] == ["a"]
    assert over_http["requests"][0]["messages"] == [{"role": "user", "content": "second question"}]


def test_recorded_requests_keep_only_the_last_200_per_model() -> None:
    stub = StubServer()
    with stub as url, httpx.Client() as client:
        for i in range(205):
            client.post(f"{url}/chat/completions", json=_body("m", f"q{i}"))
    recorded = stub.requests("m")
    assert len(recorded) == 200
    assert recorded[0]["messages"][0]["content"] == "q5"
    assert stub.stats() == {"m": 205}


def test_reset_clears_stats_records_and_fault_budgets() -> None:
    stub = StubServer(models={"m": {"fault": {"kind": "status", "times": 1}}})
    with stub as url:
        with pytest.raises(openai.InternalServerError):
            _chat(url, "m").invoke("x")
        stub.reset()
        assert (stub.stats(), stub.requests()) == ({}, [])
        with pytest.raises(openai.InternalServerError):
            _chat(url, "m").invoke("x")  # the `times` budget started again


def test_reset_endpoint_clears_stats() -> None:
    stub = StubServer()
    with stub as url:
        _chat(url, "m").invoke("x")
        assert httpx.post(f"{_root(url)}/_stub/reset").status_code == 200
        assert stub.stats() == {}


# --- latency -------------------------------------------------------------------------------


def test_latency_delays_the_answer() -> None:
    with StubServer(models={"slow": {"latency": 0.3}}) as url:
        llm = _chat(url, "slow")
        started = time.monotonic()
        llm.invoke("x")
    assert time.monotonic() - started >= 0.3


def test_latency_range_stays_within_its_bounds() -> None:
    with StubServer(models={"slow": {"latency": (0.2, 0.3)}}, seed=7) as url:
        llm = _chat(url, "slow")
        started = time.monotonic()
        llm.invoke("x")
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0


@pytest.mark.asyncio
async def test_concurrent_calls_wait_out_their_latency_in_parallel() -> None:
    with StubServer(models={"slow": {"latency": 0.2}}) as url:
        llm = _chat(url, "slow")
        started = time.monotonic()
        answers = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(50)))
        elapsed = time.monotonic() - started
    assert len(answers) == 50
    assert all(f'"q{i}"' in str(a.content) for i, a in enumerate(answers))
    assert elapsed < 3.0


# --- faults --------------------------------------------------------------------------------


def test_status_fault_with_times_fails_the_first_call_then_succeeds() -> None:
    with StubServer(models={"flaky": {"fault": {"kind": "status", "times": 1}}}) as url:
        llm = _chat(url, "flaky")
        with pytest.raises(openai.InternalServerError):
            llm.invoke("x")
        assert str(llm.invoke("x").content).startswith("[flaky]")


def test_rate_fault_fails_a_seeded_share_of_requests_the_same_way_each_run() -> None:
    def failures(seed: int) -> list[int]:
        fault = {"kind": "status", "status": 503, "rate": 0.2}
        with StubServer(models={"m": {"fault": fault}}, seed=seed) as url, httpx.Client() as client:
            statuses = [
                client.post(f"{url}/chat/completions", json=_body("m", f"q{i}")).status_code
                for i in range(200)
            ]
        assert set(statuses) == {200, 503}
        return [i for i, status in enumerate(statuses) if status == 503]

    first = failures(seed=1)
    assert 20 <= len(first) <= 60  # 200 draws at 20%: 40 expected
    assert failures(seed=1) == first
    assert failures(seed=2) != first


def test_rate_fault_with_times_fails_at_most_that_many_requests() -> None:
    fault = {"kind": "status", "rate": 0.5, "times": 3}
    with StubServer(models={"m": {"fault": fault}}) as url, httpx.Client() as client:
        statuses = [
            client.post(f"{url}/chat/completions", json=_body("m")).status_code for _ in range(40)
        ]
    assert statuses.count(500) == 3


def test_status_fault_429_sends_retry_after() -> None:
    fault = {"kind": "status", "status": 429, "retry_after": 2}
    with StubServer(models={"limited": {"fault": fault}}) as url:
        with pytest.raises(openai.RateLimitError):
            _chat(url, "limited").invoke("x")
        response = httpx.post(f"{url}/chat/completions", json=_body("limited"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_malformed_fault_makes_the_client_fail_to_decode() -> None:
    with StubServer(models={"m": {"fault": {"kind": "malformed"}}}) as url:
        with pytest.raises(json.JSONDecodeError):
            _chat(url, "m").invoke("x")
        response = httpx.post(f"{url}/chat/completions", json=_body("m"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


def test_malformed_fault_breaks_a_stream_too() -> None:
    with (
        StubServer(models={"m": {"fault": {"kind": "malformed"}}}) as url,
        pytest.raises(json.JSONDecodeError),
    ):
        list(_chat(url, "m").stream("x"))


def test_no_choices_fault_returns_an_empty_choices_list() -> None:
    with StubServer(models={"m": {"fault": {"kind": "no_choices"}}}) as url:
        client = openai.OpenAI(base_url=url, api_key="test", max_retries=0)
        completion = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert completion.choices == []
    assert completion.object == "chat.completion"


def test_reset_fault_drops_the_connection() -> None:
    with (
        StubServer(models={"m": {"fault": {"kind": "reset"}}}) as url,
        pytest.raises(openai.APIConnectionError),
    ):
        _chat(url, "m").invoke("x")


def test_cut_stream_fault_ends_the_stream_after_a_few_chunks() -> None:
    received: list[str] = []
    with StubServer(models={"m": {"fault": {"kind": "cut_stream"}}}) as url:
        client = openai.OpenAI(base_url=url, api_key="test", max_retries=0)
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "a long enough question"}], stream=True
        )
        with pytest.raises(openai.APIConnectionError):
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
                assert chunk.choices[0].finish_reason is None
    assert 1 <= len(received) < 5


def test_cut_stream_fault_drops_a_non_streaming_request() -> None:
    with (
        StubServer(models={"m": {"fault": {"kind": "cut_stream"}}}) as url,
        pytest.raises(openai.APIConnectionError),
    ):
        _chat(url, "m").invoke("x")


@pytest.mark.parametrize("streaming", [False, True])
def test_bad_tool_args_fault_yields_an_invalid_tool_call(streaming: bool) -> None:
    with StubServer(models={"m": {"fault": {"kind": "bad_tool_args"}}}) as url:
        llm = _chat(url, "m").bind_tools([calculator])
        answer = _joined(list(llm.stream(QUESTION))) if streaming else llm.invoke(QUESTION)
    assert isinstance(answer, AIMessage)
    assert answer.tool_calls == []
    assert [c["name"] for c in answer.invalid_tool_calls] == ["calculator"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.invalid_tool_calls[0]["args"] or "")


def test_hang_fault_times_out_and_the_server_still_stops_promptly() -> None:
    stub = StubServer(models={"m": {"fault": {"kind": "hang"}}})
    url = stub.start()
    try:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _chat(url, "m", timeout=0.5).invoke("x")
        assert time.monotonic() - started < 2.0
        # Leave a second request hanging in flight while stopping.
        waiting = threading.Thread(
            target=_post_ignoring_errors, args=(f"{url}/chat/completions", _body("m"))
        )
        waiting.start()
        time.sleep(0.2)
    finally:
        stopping = time.monotonic()
        stub.stop()
    assert time.monotonic() - stopping < 2.0
    waiting.join(5)
    assert not waiting.is_alive()


@pytest.mark.parametrize("streaming", [False, True])
def test_trickle_fault_sends_the_normal_answer_one_byte_at_a_time(streaming: bool) -> None:
    with StubServer(models={"m": {"fault": {"kind": "trickle", "interval_s": 0.001}}}) as url:
        llm = _chat(url, "m", timeout=30)
        answer = _joined(list(llm.stream(QUESTION))) if streaming else llm.invoke(QUESTION)
    assert "391" in str(answer.content)


def test_trickle_fault_spaces_every_byte_from_the_status_line_on() -> None:
    stub = StubServer(models={"m": {"fault": {"kind": "trickle", "interval_s": 0.05}}})
    url = stub.start()
    try:
        with _raw_post(url, _body("m")) as sock:
            started, received = time.monotonic(), b""
            while len(received) < 8:
                received += sock.recv(64)
            elapsed = time.monotonic() - started
        assert received.startswith(b"HTTP/1.1")
        assert elapsed >= 7 * 0.05 * 0.8  # eight bytes, each in its own interval
        _wait_for(lambda: stub.disconnects() == {"m": 1})  # it stops when the client leaves
    finally:
        stub.stop()


def test_endless_stream_fault_streams_chunks_that_never_end() -> None:
    stub = StubServer(models={"m": {"fault": {"kind": "endless_stream", "interval_s": 0.01}}})
    url = stub.start()
    try:
        client = openai.OpenAI(base_url=url, api_key="test", max_retries=0, timeout=5)
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        chunks = [chunk for chunk, _ in zip(stream, range(30), strict=False)]
        stream.close()
        assert all(chunk.choices[0].finish_reason is None for chunk in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("more more")
        _wait_for(lambda: stub.disconnects() == {"m": 1})
    finally:
        stub.stop()


def test_endless_stream_fault_sends_a_body_that_never_ends_to_a_plain_request() -> None:
    stub = StubServer(models={"m": {"fault": {"kind": "endless_stream", "interval_s": 0.01}}})
    url = stub.start()
    try:
        with httpx.stream("POST", f"{url}/chat/completions", json=_body("m"), timeout=5) as reply:
            assert reply.status_code == 200
            body = b""
            for chunk in reply.iter_raw():
                body += chunk
                if len(body) > 200:
                    break
        assert body.startswith(b'{"id": ') and body.endswith(b"more ")
        _wait_for(lambda: stub.disconnects() == {"m": 1})
        # A slow fault in flight does not hold up the server's stop, and ends with it.
        waiting = threading.Thread(
            target=_post_ignoring_errors, args=(f"{url}/chat/completions", _body("m"))
        )
        waiting.start()
        _wait_for(lambda: stub.stats() == {"m": 2})
    finally:
        stopping = time.monotonic()
        stub.stop()
    assert time.monotonic() - stopping < 2.0
    waiting.join(5)
    assert not waiting.is_alive()


@contextlib.contextmanager
def _raw_post(url: str, body: dict[str, Any]) -> Iterator[socket.socket]:
    """A chat-completions POST on a plain socket, to read the reply byte by byte."""
    parts = urlsplit(url)
    content = json.dumps(body).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n".encode()
            + content
        )
        yield sock


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def _post_ignoring_errors(url: str, body: dict[str, Any]) -> None:
    # The server is stopped under this request on purpose; any outcome but a hang is fine.
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json=body, timeout=30)


# --- control endpoints and lifecycle ------------------------------------------------------


def test_config_endpoint_reconfigures_a_running_server() -> None:
    with StubServer() as url:
        response = httpx.post(
            f"{_root(url)}/_stub/config",
            json={"models": {"m": {"reply": "configured"}}, "default": {"reply": "other"}},
        )
        assert response.status_code == 200
        assert _chat(url, "m").invoke("x").content == "configured"
        assert _chat(url, "unlisted").invoke("x").content == "other"


def test_config_endpoint_rejects_an_invalid_behaviour() -> None:
    with StubServer(models={"m": {"reply": "kept"}}) as url:
        response = httpx.post(
            f"{_root(url)}/_stub/config", json={"models": {"m": {"fault": {"kind": "nope"}}}}
        )
        assert response.status_code == 400
        assert "error" in response.json()
        assert _chat(url, "m").invoke("x").content == "kept"


def test_configure_method_merges_behaviour_at_runtime() -> None:
    stub = StubServer(models={"a": {"reply": "A"}})
    with stub as url:
        stub.configure({"b": {"reply": "B"}})
        assert (_chat(url, "a").invoke("x").content, _chat(url, "b").invoke("x").content) == (
            "A",
            "B",
        )


def test_models_endpoint_lists_configured_models() -> None:
    with StubServer(models={"ref-a": {}, "agg": {}}) as url:
        listed = openai.OpenAI(base_url=url, api_key="test").models.list()
    assert sorted(m.id for m in listed.data) == ["agg", "ref-a"]
    assert {m.owned_by for m in listed.data} == {"moa-graph-stub"}


def test_unknown_route_returns_an_openai_shaped_404() -> None:
    with StubServer() as url:
        response = httpx.get(f"{url}/nothing-here")
    assert response.status_code == 404
    assert set(response.json()["error"]) >= {"message", "type"}


def test_invalid_json_body_returns_an_openai_shaped_400() -> None:
    with StubServer() as url:
        response = httpx.post(
            f"{url}/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_start_and_stop_twice_are_harmless_and_restart_works() -> None:
    stub = StubServer()
    first = stub.start()
    assert stub.start() == first
    stub.stop()
    stub.stop()
    with pytest.raises(RuntimeError):
        _ = stub.url
    with stub as again:
        assert _chat(again, "m").invoke("x").content


def test_port_zero_binds_a_real_free_port() -> None:
    with StubServer(port=0) as url:
        port = int(url.rsplit(":", 1)[1].removesuffix("/v1"))
        assert port > 0
        assert httpx.get(f"{url}/models").status_code == 200


def test_start_on_a_busy_port_raises_oserror() -> None:
    with StubServer() as url:
        busy = int(url.rsplit(":", 1)[1].removesuffix("/v1"))
        with pytest.raises(OSError):
            StubServer(port=busy).start()


@pytest.mark.asyncio
async def test_serve_runs_until_cancelled() -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(port=0, models={"m": {}}, on_ready=ready.set_result))
    url = await asyncio.wait_for(ready, 5)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/models")).json()["data"][0]["id"] == "m"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_load_stub_config_reads_yaml(tmp_path: Path) -> None:
    path = tmp_path / "stub.yaml"
    path.write_text(
        "default:\n  latency: 0.1\n"
        "models:\n"
        "  flaky:\n    fault: {kind: status, status: 503, times: 2}\n"
        "  slow:\n    latency: [0.1, 0.2]\n    reply: hello\n",
        encoding="utf-8",
    )
    models, default = load_stub_config(path)
    assert default == ModelBehaviour(latency=0.1)
    assert models["flaky"].fault is not None
    assert (models["flaky"].fault.status, models["flaky"].fault.times) == (503, 2)
    assert models["slow"] == ModelBehaviour(latency=(0.1, 0.2), reply="hello")


def test_load_stub_config_names_the_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "stub.json"
    path.write_text(json.dumps({"models": {"m": {"fault": {"kind": "explode"}}}}), "utf-8")
    with pytest.raises(ConfigError, match=r"stub\.json: models\.m\.fault\.kind"):
        load_stub_config(path)


# --- fidelity: scripts, validation, the Responses API ------------------------------------------


def test_a_script_replays_its_replies_in_order_then_the_default_policy_answers() -> None:
    script = [
        {"tool_calls": [{"name": "search", "arguments": {"query": "rivers"}, "id": "call_1"}]},
        "Rivers are long.",
    ]
    with StubServer(models={"m": {"script": script}}) as url:
        llm = _chat(url, "m")
        first, second, third = (llm.invoke("Tell me about rivers") for _ in range(3))
    assert isinstance(first, AIMessage)
    assert [(c["name"], c["args"], c["id"]) for c in first.tool_calls] == [
        ("search", {"query": "rivers"}, "call_1")
    ]
    assert second.content == "Rivers are long."
    assert str(third.content).startswith("[m]")


def test_reset_starts_a_script_over() -> None:
    with StubServer(models={"m": {"script": ["one", "two"]}}) as url:
        server_url = url
        assert _chat(server_url, "m").invoke("q").content == "one"
        httpx.post(f"{_root(server_url)}/_stub/reset")
        assert _chat(server_url, "m").invoke("q").content == "one"


def test_load_stub_config_reads_a_script(tmp_path: Path) -> None:
    path = tmp_path / "stub.yaml"
    path.write_text("models:\n  m:\n    script: [hello, {content: bye}]\n", encoding="utf-8")
    models, _ = load_stub_config(path)
    assert [reply.content for reply in models["m"].script] == ["hello", "bye"]


def test_a_tool_message_answering_no_call_is_a_400_in_openais_shape() -> None:
    with StubServer() as url:
        response = httpx.post(
            f"{url}/chat/completions",
            json={
                "model": "m",
                "messages": [
                    {"role": "user", "content": QUESTION},
                    {"role": "tool", "tool_call_id": "call_x", "content": "391"},
                ],
            },
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages.[1].role"


def test_an_unanswered_tool_call_is_a_400() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with StubServer() as url:
        response = httpx.post(
            f"{url}/chat/completions",
            json={
                "model": "m",
                "messages": [
                    {"role": "user", "content": QUESTION},
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "user", "content": "and?"},
                ],
            },
        )
    assert response.status_code == 400
    assert "call_1" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.[0].role"),
        ({"messages": []}, "messages"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"tools": []}, "tools"),
        # JSON mode needs the word in the messages; `_body`'s question has no "json" in it.
        ({"response_format": {"type": "json_object"}}, "messages"),
    ],
)
def test_invalid_requests_are_400s_naming_the_param(extra: dict[str, Any], param: str) -> None:
    with StubServer() as url:
        response = httpx.post(f"{url}/chat/completions", json=_body("m", **extra))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_strict_tool_with_an_open_schema_is_a_400() -> None:
    tool_spec = {
        "type": "function",
        "function": {
            "name": "f",
            "strict": True,
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        },
    }
    with StubServer() as url:
        response = httpx.post(f"{url}/chat/completions", json=_body("m", tools=[tool_spec]))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json_schema"


def test_the_model_endpoint_retrieves_any_model_name() -> None:
    with StubServer() as url:
        response = httpx.get(f"{url}/models/anything")
    assert response.json() == {
        "id": "anything",
        "object": "model",
        "created": 0,
        "owned_by": "moa-graph-stub",
    }


def test_chat_openai_on_the_responses_api_invokes_and_streams() -> None:
    with StubServer() as url:
        llm = _chat(url, "ref-a", use_responses_api=True)
        answer = llm.invoke("Tell me about rivers")
        chunks = list(llm.stream("Tell me about rivers"))
    assert answer.text.startswith("[ref-a]")
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    assert _joined(chunks).text == answer.text


@pytest.mark.parametrize("streaming", [False, True])
def test_chat_openai_on_the_responses_api_makes_a_tool_round_trip(streaming: bool) -> None:
    with StubServer() as url:
        llm = _chat(url, "agg", use_responses_api=True).bind_tools([calculator])
        ask = (lambda m: _joined(list(llm.stream(m)))) if streaming else llm.invoke
        call = ask([HumanMessage(QUESTION)])
        assert [(c["name"], c["args"]) for c in call.tool_calls] == [
            ("calculator", {"expression": "17 * 23"})
        ]
        result = ToolMessage("391", tool_call_id=call.tool_calls[0]["id"])
        answer = ask([HumanMessage(QUESTION), call, result])
    assert answer.text == "The result is 391."

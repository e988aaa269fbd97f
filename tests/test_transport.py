"""Shared async HTTP clients: one per base URL and event loop, aiohttp by default, closed
with their loop; a caller's own client factory is used instead when given."""

import asyncio
import gc
import subprocess
import sys
import textwrap
import time
import weakref

import httpx2
import openai
import pytest
from langchain_core.messages import HumanMessage

from moa_graph import ProviderSpec, aclose_http_clients, bounds, build_moa_graph, transport
from moa_graph.bounds import BoundedAsyncTransport, BoundedTransport
from moa_graph.providers import default_model_factory
from moa_graph.transport import async_http_client, sync_http_client

QUESTION = {"messages": [HumanMessage("What is 17 * 23?")]}


def _config(url: str, *, second_url: str | None = None) -> dict:
    providers = {"stub": {"base_url": url}}
    gamma = {"provider": "stub", "model": "gamma"}
    if second_url:
        providers["other"] = {"base_url": second_url}
        gamma = {"provider": "other", "model": "gamma"}
    return {
        "moa": {
            "providers": providers,
            "presets": {
                "demo": {
                    "reference_models": [
                        {"provider": "stub", "model": "alpha"},
                        {"provider": "stub", "model": "beta"},
                        gamma,
                    ],
                    "aggregator": {"provider": "stub", "model": "boss"},
                }
            },
        }
    }


def test_one_client_per_base_url_and_loop_closed_when_the_loop_ends():
    async def clients() -> tuple[object, object, object]:
        a, b = async_http_client("http://a.invalid/v1"), async_http_client("http://a.invalid/v1")
        return a, b, async_http_client("http://b.invalid/v1")

    first = asyncio.run(clients())
    second = asyncio.run(clients())
    assert first[0] is first[1] and first[0] is not first[2]
    assert second[0] is not first[0]
    assert isinstance(first[0], openai.DefaultAioHttpClient)
    assert all(client.is_closed for client in (*first, *second))
    assert async_http_client("http://a.invalid/v1") is None  # sync code has no shared client


def test_models_on_one_base_url_share_a_client_made_by_the_callers_factory(stub, other_stub):
    made: list[str] = []

    def factory(base_url: str) -> openai.DefaultAsyncHttpxClient:
        made.append(base_url)
        return openai.DefaultAsyncHttpxClient()

    graph = build_moa_graph(
        "demo",
        config=_config(stub.url, second_url=other_stub.url),
        model_factory=default_model_factory(
            {
                "stub": ProviderSpec(base_url=stub.url),
                "other": ProviderSpec(base_url=other_stub.url),
            },
            http_client=factory,
        ),
    ).compile()
    for _ in range(2):
        out = asyncio.run(graph.ainvoke(QUESTION))
        assert [r["status"] for r in out["references"]] == ["ok", "ok", "ok"]
    # alpha, beta and boss share the first URL's client; gamma has its own; per loop.
    assert sorted(made) == sorted([stub.url, other_stub.url] * 2)
    assert stub.stats() == {"alpha": 2, "beta": 2, "boss": 2}
    assert other_stub.stats() == {"gamma": 2}


async def test_aclose_http_clients_closes_now_and_the_next_call_reopens(stub):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    await graph.ainvoke(QUESTION)
    client = async_http_client(stub.url)
    await aclose_http_clients()
    assert client.is_closed
    out = await graph.ainvoke(QUESTION)
    assert [r["status"] for r in out["references"]] == ["ok", "ok", "ok"]
    assert async_http_client(stub.url) is not client


def test_no_unclosed_session_warnings_when_scripts_use_asyncio_run(stub):
    script = textwrap.dedent(
        f"""
        import asyncio, gc, warnings
        warnings.simplefilter("always")
        from moa_graph import build_moa_graph
        config = {_config(stub.url)!r}
        graph = build_moa_graph("demo", config=config).compile()
        for _ in range(2):
            out = asyncio.run(graph.ainvoke({{"messages": [("user", "17 * 23?")]}}))
            assert [r["status"] for r in out["references"]] == ["ok"] * 3
        gc.collect()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "Unclosed" not in done.stderr and "unclosed" not in done.stderr, done.stderr
    assert stub.stats() == {"alpha": 2, "beta": 2, "gamma": 2, "boss": 2}


def test_the_sync_path_keeps_working_next_to_async_runs(stub):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    asyncio.run(graph.ainvoke(QUESTION))
    out = graph.invoke(QUESTION)
    assert [r["status"] for r in out["references"]] == ["ok", "ok", "ok"]


def test_import_stays_light_and_warm_up_loads_the_client_stack():
    script = (
        "import sys, moa_graph\n"
        "assert 'openai' not in sys.modules and 'langchain_openai' not in sys.modules\n"
        "moa_graph.warm_up()\n"
        "assert 'langchain_openai' in sys.modules and 'aiohttp' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_finished_event_loops_are_not_kept_alive(stub):
    # A server calling asyncio.run per request must not accumulate dead loops and clients.
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    loops = []
    for _ in range(3):
        with asyncio.Runner() as runner:
            loops.append(weakref.ref(runner.get_loop()))
            out = runner.run(graph.ainvoke(QUESTION))
            assert [r["status"] for r in out["references"]] == ["ok"] * 3
    gc.collect()
    assert [loop() is None for loop in loops[:2]] == [True, True]


def test_the_bounded_transports_are_public_in_moa_graph_bounds_alone():
    names = {"BoundedAsyncTransport", "BoundedTransport"}
    assert names <= set(bounds.__all__)
    assert not names & set(transport.__all__)
    assert "`moa_graph.bounds.BoundedAsyncTransport`" in " ".join(
        default_model_factory.__doc__.split()
    )


def test_sync_models_share_one_bounded_client_per_base_url(stub):
    graph = build_moa_graph("demo", config=_config(stub.url)).compile()
    graph.invoke(QUESTION)
    client = sync_http_client(stub.url)
    assert sync_http_client(stub.url) is client
    assert sync_http_client("http://b.invalid/v1") is not client
    assert isinstance(client, openai.DefaultHttpxClient)  # the OpenAI client's defaults


async def test_an_answer_on_the_socket_by_the_deadline_is_kept_when_the_loop_runs_late(stub):
    stub.configure({"m": {"latency": 0.2}})
    client = openai.AsyncOpenAI(
        base_url=stub.url, api_key="any", http_client=async_http_client(stub.url), max_retries=0
    )
    messages = [{"role": "user", "content": "What is 17 * 23?"}]
    await client.chat.completions.create(model="warm", messages=messages)  # a pooled connection
    request = asyncio.create_task(
        client.chat.completions.create(model="m", messages=messages, timeout=0.5)
    )
    while stub.stats().get("m") != 1:  # on the wire
        await asyncio.sleep(0.005)
    time.sleep(0.8)  # the loop is busy past the deadline; the answer lands at 0.2 s
    reply = await request
    assert "391" in reply.choices[0].message.content


async def test_an_answer_still_arriving_at_the_deadline_is_cut(stub):
    stub.configure({"m": {"fault": {"kind": "trickle", "interval_s": 0.05}}})
    client = openai.AsyncOpenAI(
        base_url=stub.url, api_key="any", http_client=async_http_client(stub.url), max_retries=0
    )
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as info:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], timeout=0.5
        )
    assert 0.5 <= time.monotonic() - started < 1.0
    assert "timeout of 0.5 s" in str(info.value.__cause__)


# --- a late response, through a fake inner transport (the behaviour is the wrapper's) --------

BUDGET = 0.05
"""The request's timeout; the fake transports answer after twice as long."""


class _Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A response body that records whether it was closed (the connection back in its pool)."""

    closed = False

    def __iter__(self):
        yield b"{}"

    async def __aiter__(self):
        yield b"{}"

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class _LateTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Sends nothing: its headers come in after the request's timeout, blocking till then."""

    def __init__(self) -> None:
        self.body = _Body()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        time.sleep(2 * BUDGET)
        return httpx2.Response(200, stream=self.body)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.handle_request(request)  # blocks the loop: its timer cannot cut it


def _request() -> httpx2.Request:
    timeouts = dict.fromkeys(("connect", "read", "write", "pool"), BUDGET)
    return httpx2.Request("POST", "http://stub.invalid/v1", extensions={"timeout": timeouts})


def test_a_sync_response_whose_headers_come_late_is_closed_not_dropped():
    inner = _LateTransport()
    with pytest.raises(httpx2.TimeoutException, match=r"timeout of 0\.05 s"):
        BoundedTransport(inner).handle_request(_request())
    assert inner.body.closed


async def test_an_async_response_whose_headers_come_late_is_kept_not_dropped():
    # The async bound cuts a step only while it waits: a step that returned is returned.
    inner = _LateTransport()
    response = await BoundedAsyncTransport(inner).handle_async_request(_request())
    assert response.status_code == 200 and not inner.body.closed
    await response.aclose()
    assert inner.body.closed

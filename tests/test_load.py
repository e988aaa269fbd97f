"""Load: 200 threads × 3 turns at once, through faults, on each store; nothing lost or doubled.

5% of reference calls fail (those answers become `failed`) and 1% of aggregator calls fail.
The aggregator gets no client retries here so that its failures reach the driver as
`MoAAggregatorError` (with the default two retries a 1% fault escapes once in a million
turns, and the client's retries are covered by test_faults.py); the driver then resumes the
thread with `ainvoke(None, thread)`, as a real worker would. The stand-in runs in a process
of its own so that it does not compete with the client for the GIL. Turns per second and
peak memory go to the terminal summary; only correctness is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from moa_graph import MoAAggregatorError, build_moa_graph
from tests.conftest import Store
from tests.workers.turn import stub_config

THREADS = 200
TURNS = 3
STUB_WORKER = Path(__file__).resolve().parent / "workers" / "stub.py"
LATENCY = (0.005, 0.03)
BEHAVIOUR = {
    "alpha": {"latency": LATENCY, "fault": {"kind": "status", "status": 500, "rate": 0.05}},
    "beta": {"latency": LATENCY, "fault": {"kind": "status", "status": 500, "rate": 0.05}},
    "boss": {"latency": LATENCY, "fault": {"kind": "status", "status": 500, "rate": 0.01}},
}


@dataclass(frozen=True)
class RemoteStub:
    """The stand-in running in another process."""

    url: str

    def stats(self) -> dict[str, int]:
        response = httpx.get(self.url.removesuffix("/v1") + "/_stub/stats")
        return dict(response.raise_for_status().json()["requests"])


@pytest.fixture
def remote_stub() -> Iterator[RemoteStub]:
    argv = [sys.executable, str(STUB_WORKER), json.dumps({"models": BEHAVIOUR})]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, "the stand-in did not start within 30 s"
        yield RemoteStub(server.stdout.readline().strip())
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _question(thread: int, turn: int) -> str:
    return f"Thread {thread}, turn {turn}: what is {thread} + {turn}?"


def _thread(index: int) -> RunnableConfig:
    return {"configurable": {"thread_id": f"load-{index}"}}


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


@contextlib.asynccontextmanager
async def _peak_rss() -> AsyncIterator[list[float]]:
    """Sample this process's resident memory every 50 ms; yields [baseline, peak] in MiB."""
    figures = [_rss_mib(), _rss_mib()]

    async def sample() -> None:
        while True:
            figures[1] = max(figures[1], _rss_mib())
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        yield figures
    finally:
        sampler.cancel()
        figures[1] = max(figures[1], _rss_mib())


async def _converse(graph: Any, index: int, resumes: list[int]) -> None:
    """Three turns on one thread, resuming a turn whose aggregator failed until it completes."""
    for turn in range(TURNS):
        request: dict[str, Any] | None = {"messages": [HumanMessage(_question(index, turn))]}
        while True:
            try:
                await graph.ainvoke(request, _thread(index))
                break
            except MoAAggregatorError:
                resumes.append(index)
                request = None


async def _check_thread(saver: BaseCheckpointSaver[str], index: int) -> int:
    """Assert the thread's history; return how many of its last turn's references failed."""
    history = [item async for item in saver.alist(_thread(index))][::-1]
    steps = [item.metadata["step"] for item in history]
    sizes = [len(item.checkpoint["channel_values"].get("messages", [])) for item in history]
    assert steps == sorted(set(steps)), (index, steps)
    assert sizes == sorted(sizes), (index, sizes)

    final = history[-1].checkpoint["channel_values"]
    messages = final["messages"]
    assert [m.type for m in messages] == ["human", "ai"] * TURNS, index
    for turn, (question, answer) in enumerate(zip(messages[::2], messages[1::2], strict=True)):
        assert question.content == _question(index, turn)
        assert f'Answer to "{question.content}"' in answer.content, (index, turn)
    assert [r["label"] for r in final["references"]] == ["stub:alpha", "stub:beta"]
    return sum(r["status"] == "failed" for r in final["references"])


async def test_200_threads_of_3_turns_through_faults_lose_and_double_nothing(
    store: Store, remote_stub: RemoteStub, report: Any
):
    graph_config = stub_config(remote_stub.url, max_retries=0)
    resumes: list[int] = []
    async with store.open() as saver:
        graph = build_moa_graph("demo", config=graph_config).compile(checkpointer=saver)
        async with _peak_rss() as memory:
            started = time.perf_counter()
            await asyncio.gather(*(_converse(graph, i, resumes) for i in range(THREADS)))
            elapsed = time.perf_counter() - started
        failed = sum([await _check_thread(saver, index) for index in range(THREADS)])

    stats = remote_stub.stats()
    turns_per_s = THREADS * TURNS / elapsed
    report(
        f"{THREADS * TURNS} turns in {elapsed:.1f} s = {turns_per_s:.0f} turns/s, "
        f"peak RSS {memory[1]:.0f} MiB (+{memory[1] - memory[0]:.0f} MiB during the run), "
        f"{len(resumes)} turns resumed, {failed} failed references in the last turns, "
        f"requests {stats}",
        turns_per_s=round(turns_per_s, 1),
        peak_rss_mib=round(memory[1]),
    )
    # Each turn asked each reference once, and the aggregator once per attempt.
    assert stats["alpha"] == stats["beta"] == THREADS * TURNS
    assert stats["boss"] == THREADS * TURNS + len(resumes)
    assert resumes, "no aggregator failure reached the driver: the resume path went untested"
    assert failed, "no reference failed: the 5% fault went untested"

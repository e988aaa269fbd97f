"""The systems under test, each one MoA turn as `await contender.turn(question)`.

Baselines (no graph): the bare-aiohttp floor, references awaited one after another, a thread
pool of 8, and hand-gathered `ChatOpenAI` calls (the floor for anything on langchain-openai).
moa_graph: the compiled graph (`ainvoke`), `MoAChatModel` and `MoAMiddleware` in a
`create_agent` agent, as shipped (no `model_factory`) and with a `model_factory` that gives
`ChatOpenAI` another HTTP transport: the OpenAI SDK's aiohttp client (`DefaultAioHttpClient`)
or its httpx one, shared by every model on the base URL or one per model. A turn raises
when it did not do the whole job (a reference failed), so every contender's `errors` mean
the same thing. The moa_graph contenders also report each answered reference's own
`latency_ms` (`TurnReport`), which the heavy-tails figure measures its bound against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
import openai
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from benchmarks.measure import TurnReport
from benchmarks.workload import (
    AGGREGATOR,
    PRESET,
    REFERENCE_SYSTEM_PROMPT,
    guidance,
    moa_config,
    reference_names,
)
from moa_graph import MoAChatModel, ModelSpec, build_moa_graph
from moa_graph.providers import ModelFactory

__all__ = ["CONTENDERS", "Contender", "ContenderInfo", "Setup", "TurnFailed"]

Transport = Literal["httpx", "aiohttp"]
Sharing = Literal["shared", "per-model"]

_API_KEY = "not-needed"
_TIMEOUT_S = 120.0
_MAX_RETRIES = 2
_THREAD_POOL_SIZE = 8


class TurnFailed(Exception):
    """A turn finished without every reference answering (or without an answer)."""


@dataclass(frozen=True)
class Setup:
    """What a contender is built for: the stand-in, the preset's width, a deadline, a quorum."""

    url: str
    n_refs: int
    deadline_s: float | None = None
    """References deadline: moa_graph's `references_deadline_s`, the floor's `asyncio.wait`."""
    quorum: int | None = None
    """moa_graph's `quorum`: the fan-out ends once this many references answered."""
    quorum_grace_s: float = 0.0
    """moa_graph's `quorum_grace_s`: how long the others may still finish."""

    @property
    def cuts(self) -> bool:
        """Whether references may be cut (deadline or quorum), so not all must answer."""
        return self.deadline_s is not None or self.quorum is not None

    def preset_keys(self) -> dict[str, Any]:
        """The preset keys of the deadline and the quorum, where set."""
        keys: dict[str, Any] = {}
        if self.deadline_s is not None:
            keys["references_deadline_s"] = self.deadline_s
        if self.quorum is not None:
            keys["quorum"] = self.quorum
            keys["quorum_grace_s"] = self.quorum_grace_s
        return keys


class Contender(Protocol):
    """One way of running a MoA turn."""

    async def prepare(self, concurrency: int) -> None:
        """Get ready for `concurrency` conversations at once (e.g. driver threads)."""

    async def turn(self, question: str) -> int | TurnReport:
        """Run one MoA turn on `question`; return how many references answered.

        Raises:
            TurnFailed: Without a deadline or quorum, when a reference did not answer.
        """

    async def aclose(self) -> None:
        """Release clients and threads."""


@dataclass(frozen=True)
class ContenderInfo:
    """A contender as the report names it."""

    name: str
    family: Literal["floor", "baseline", "moa_graph"]
    transport: str
    clients: str
    description: str
    build: Callable[[Setup], Contender] = field(repr=False)
    supports_deadline: bool = False
    supports_quorum: bool = False


# --- HTTP clients ------------------------------------------------------------------------------


class _Clients:
    """The `http_async_client` each `ChatOpenAI` gets, and closing them all."""

    def __init__(self, transport: Transport | None, sharing: Sharing = "shared") -> None:
        self._transport = transport
        self._sharing = sharing
        self._made: list[Any] = []
        self._shared: Any = None

    def client(self) -> Any:
        """A client for one more model; None means langchain-openai's default."""
        if self._transport is None:
            return None
        if self._sharing == "shared" and self._shared is not None:
            return self._shared
        made = (
            openai.DefaultAioHttpClient()
            if self._transport == "aiohttp"
            else openai.DefaultAsyncHttpxClient()
        )
        self._made.append(made)
        if self._sharing == "shared":
            self._shared = made
        return made

    def chat(self, url: str, model: str, **options: Any) -> ChatOpenAI:
        """A `ChatOpenAI` for `model` at `url`, configured as moa_graph's provider table does."""
        client = self.client()
        if client is not None:
            options["http_async_client"] = client
        return ChatOpenAI(
            model=model,
            base_url=url,
            api_key=_API_KEY,
            timeout=options.pop("timeout", None) or _TIMEOUT_S,
            max_retries=_MAX_RETRIES,
            stream_usage=True,
            **options,
        )

    def model_factory(self, url: str) -> ModelFactory | None:
        """A moa_graph `model_factory` using these clients; None keeps moa_graph's own."""
        if self._transport is None:
            return None

        def build(spec: ModelSpec) -> ChatOpenAI:
            return self.chat(
                url,
                spec.model,
                temperature=spec.temperature,
                max_completion_tokens=spec.max_tokens,
                timeout=spec.timeout,
            )

        return build

    async def aclose(self) -> None:
        for made in self._made:
            await made.aclose()


def _advisor_input(question: str) -> list[BaseMessage]:
    return [SystemMessage(REFERENCE_SYSTEM_PROMPT), HumanMessage(question)]


def _aggregator_input(question: str, answers: list[str | None]) -> list[BaseMessage]:
    return [HumanMessage(question), HumanMessage(guidance(answers))]


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)


# --- baselines ---------------------------------------------------------------------------------


class _RawAiohttp:
    """The machine's floor: `asyncio.gather` of bare aiohttp POSTs, JSON in and out."""

    def __init__(self, setup: Setup) -> None:
        self._setup = setup
        self._endpoint = f"{setup.url}/chat/completions"
        self._session: aiohttp.ClientSession | None = None

    async def prepare(self, concurrency: int) -> None:
        if self._session is None:
            # No connection limit: the floor is what the machine can do, not a pool's size.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def turn(self, question: str) -> int:
        advisor = [
            {"role": "system", "content": REFERENCE_SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
        calls = [
            asyncio.ensure_future(self._complete(name, advisor))
            for name in reference_names(self._setup.n_refs)
        ]
        if self._setup.deadline_s is None:
            answers: list[str | None] = list(await asyncio.gather(*calls))
        else:
            done, pending = await asyncio.wait(calls, timeout=self._setup.deadline_s)
            for call in pending:
                call.cancel()
            answers = [c.result() if c in done and not c.exception() else None for c in calls]
        final = await self._complete(
            AGGREGATOR,
            [{"role": "user", "content": question}, {"role": "user", "content": guidance(answers)}],
        )
        if not final:
            raise TurnFailed("the aggregator gave no answer")
        return sum(answer is not None for answer in answers)

    async def _complete(self, model: str, messages: list[dict[str, str]]) -> str:
        assert self._session is not None
        body = {"model": model, "messages": messages}
        async with self._session.post(self._endpoint, json=body) as response:
            response.raise_for_status()
            data = await response.json()
        return str(data["choices"][0]["message"]["content"])

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _HandGathered:
    """`asyncio.gather` of `ChatOpenAI.ainvoke` per reference, then the aggregator; no graph."""

    def __init__(self, setup: Setup, clients: _Clients, *, sequential: bool = False) -> None:
        self._clients = clients
        self._sequential = sequential
        self._references = [clients.chat(setup.url, n) for n in reference_names(setup.n_refs)]
        self._aggregator = clients.chat(setup.url, AGGREGATOR)

    async def prepare(self, concurrency: int) -> None:
        return None

    async def turn(self, question: str) -> int:
        advisor = _advisor_input(question)
        if self._sequential:
            replies = [await model.ainvoke(advisor) for model in self._references]
        else:
            replies = await asyncio.gather(*(m.ainvoke(advisor) for m in self._references))
        answers: list[str | None] = [_text(reply) for reply in replies]
        await self._aggregator.ainvoke(_aggregator_input(question, answers))
        return len(answers)

    async def aclose(self) -> None:
        await self._clients.aclose()


class _ThreadPool:
    """Sync `ChatOpenAI.invoke` per reference in a `ThreadPoolExecutor(8)`, wait for all.

    Each conversation runs on a driver thread of its own, as a sync web server would run it.
    """

    def __init__(self, setup: Setup) -> None:
        self._references = [
            _Clients(None).chat(setup.url, n) for n in reference_names(setup.n_refs)
        ]
        self._aggregator = _Clients(None).chat(setup.url, AGGREGATOR)
        self._drivers: ThreadPoolExecutor | None = None
        self._size = 0

    async def prepare(self, concurrency: int) -> None:
        if concurrency > self._size:
            if self._drivers is not None:
                self._drivers.shutdown()
            self._drivers = ThreadPoolExecutor(concurrency, thread_name_prefix="conversation")
            self._size = concurrency

    async def turn(self, question: str) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._drivers, self._turn, question)

    def _turn(self, question: str) -> int:
        advisor = _advisor_input(question)
        with ThreadPoolExecutor(_THREAD_POOL_SIZE) as pool:
            replies = list(pool.map(lambda model: model.invoke(advisor), self._references))
        self._aggregator.invoke(_aggregator_input(question, [_text(r) for r in replies]))
        return len(replies)

    async def aclose(self) -> None:
        if self._drivers is not None:
            self._drivers.shutdown()


# --- moa_graph ---------------------------------------------------------------------------------


class _MoAGraph:
    """`build_moa_graph(...).compile()`, one `ainvoke` per turn (no checkpointer)."""

    def __init__(self, setup: Setup, clients: _Clients) -> None:
        self._setup = setup
        self._clients = clients
        config = moa_config(setup.url, setup.n_refs, extra=setup.preset_keys())
        builder = build_moa_graph(
            PRESET, config=config, model_factory=clients.model_factory(setup.url)
        )
        self._graph = builder.compile()

    async def prepare(self, concurrency: int) -> None:
        return None

    async def turn(self, question: str) -> TurnReport:
        out = await self._graph.ainvoke({"messages": [HumanMessage(question)]})
        if not _text(out["messages"][-1]):
            raise TurnFailed("the aggregator gave no answer")
        return _answered(out.get("references", []), self._setup)

    async def aclose(self) -> None:
        await self._clients.aclose()


class _MoAChat:
    """`MoAChatModel(...).ainvoke([question])`, one call per turn."""

    def __init__(self, setup: Setup, clients: _Clients) -> None:
        self._setup = setup
        self._clients = clients
        self._model = MoAChatModel(
            preset=PRESET,
            config=moa_config(setup.url, setup.n_refs, extra=setup.preset_keys()),
            model_factory=clients.model_factory(setup.url),
        )

    async def prepare(self, concurrency: int) -> None:
        return None

    async def turn(self, question: str) -> TurnReport:
        reply = await self._model.ainvoke([HumanMessage(question)])
        if not _text(reply):
            raise TurnFailed("the aggregator gave no answer")
        return _answered(reply.response_metadata["moa_references"], self._setup)

    async def aclose(self) -> None:
        await self._clients.aclose()


class _MoAMiddleware:
    """`create_agent(ChatOpenAI, middleware=[MoAMiddleware(...)])`, one `ainvoke` per turn.

    The agent's own model is the aggregator: a `ChatOpenAI` as a user writes it (the
    langchain-openai default transport); the references go moa_graph's shipped way.
    """

    def __init__(self, setup: Setup, clients: _Clients) -> None:
        from langchain.agents import create_agent

        from moa_graph import MoAMiddleware

        self._setup = setup
        self._clients = clients
        moa = MoAMiddleware(
            PRESET,
            config=moa_config(setup.url, setup.n_refs, extra=setup.preset_keys()),
            model_factory=clients.model_factory(setup.url),
        )
        self._agent = create_agent(clients.chat(setup.url, AGGREGATOR), middleware=[moa])

    async def prepare(self, concurrency: int) -> None:
        return None

    async def turn(self, question: str) -> TurnReport:
        out = await self._agent.ainvoke({"messages": [HumanMessage(question)]})
        if not _text(out["messages"][-1]):
            raise TurnFailed("the aggregator gave no answer")
        return _answered(out.get("references", []), self._setup)

    async def aclose(self) -> None:
        await self._clients.aclose()


def _answered(references: list[dict[str, Any]], setup: Setup) -> TurnReport:
    """How many references answered, and each answer's own `latency_ms`.

    Without a deadline or a quorum, all of them must have answered.
    """
    statuses = [r["status"] for r in references]
    if len(statuses) != setup.n_refs:
        raise TurnFailed(f"{len(statuses)} of {setup.n_refs} references reported")
    if not setup.cuts and any(status != "ok" for status in statuses):
        raise TurnFailed(f"reference statuses {sorted(set(statuses))}")
    ok_ms = sorted(float(r.get("latency_ms") or 0.0) for r in references if r["status"] == "ok")
    return TurnReport(len(ok_ms), {"ok_ms": ok_ms})


def _info(
    name: str,
    family: Literal["floor", "baseline", "moa_graph"],
    transport: str,
    clients: str,
    description: str,
    build: Callable[[Setup], Contender],
    *,
    supports_deadline: bool = False,
    supports_quorum: bool = False,
) -> ContenderInfo:
    return ContenderInfo(
        name, family, transport, clients, description, build, supports_deadline, supports_quorum
    )


_AS_SHIPPED = "as shipped"
CONTENDERS: dict[str, ContenderInfo] = {
    info.name: info
    for info in [
        _info(
            "raw-aiohttp",
            "floor",
            "aiohttp (bare)",
            "one session",
            "asyncio.gather of bare aiohttp POSTs; no LangChain (the machine's floor)",
            _RawAiohttp,
            supports_deadline=True,
        ),
        _info(
            "sequential",
            "baseline",
            "httpx (langchain-openai default)",
            "shared",
            "ChatOpenAI.ainvoke per reference, one after another",
            lambda s: _HandGathered(s, _Clients(None), sequential=True),
        ),
        _info(
            "thread-pool-8",
            "baseline",
            "httpx (sync, default)",
            "shared",
            "sync ChatOpenAI.invoke per reference in a ThreadPoolExecutor(8), wait for all",
            _ThreadPool,
        ),
        _info(
            "chatopenai",
            "baseline",
            "httpx (langchain-openai default)",
            "shared",
            "asyncio.gather of ChatOpenAI.ainvoke, no graph (the langchain-openai floor)",
            lambda s: _HandGathered(s, _Clients(None)),
        ),
        _info(
            "chatopenai+aiohttp",
            "baseline",
            "aiohttp (DefaultAioHttpClient)",
            "shared",
            "asyncio.gather of ChatOpenAI.ainvoke over one shared DefaultAioHttpClient",
            lambda s: _HandGathered(s, _Clients("aiohttp")),
        ),
        _info(
            "graph",
            "moa_graph",
            _AS_SHIPPED,
            _AS_SHIPPED,
            "build_moa_graph(...).compile().ainvoke, no model_factory (aiohttp shared per "
            "base URL, references as one direct POST each)",
            lambda s: _MoAGraph(s, _Clients(None)),
            supports_deadline=True,
            supports_quorum=True,
        ),
        _info(
            "graph+httpx-per-model",
            "moa_graph",
            "httpx (DefaultAsyncHttpxClient)",
            "per model",
            "the graph with a model_factory giving each model its own httpx client and "
            "references through ChatOpenAI.ainvoke (the default before fixes 1 and 2)",
            lambda s: _MoAGraph(s, _Clients("httpx", "per-model")),
        ),
        _info(
            "graph+aiohttp",
            "moa_graph",
            "aiohttp (DefaultAioHttpClient)",
            "shared",
            "the graph with a model_factory sharing one DefaultAioHttpClient per base URL; "
            "references through ChatOpenAI.ainvoke (the shipped transport without fix 1)",
            lambda s: _MoAGraph(s, _Clients("aiohttp")),
            supports_deadline=True,
            supports_quorum=True,
        ),
        _info(
            "graph+aiohttp-per-model",
            "moa_graph",
            "aiohttp (DefaultAioHttpClient)",
            "per model",
            "the graph with a model_factory giving each model its own DefaultAioHttpClient",
            lambda s: _MoAGraph(s, _Clients("aiohttp", "per-model")),
        ),
        _info(
            "chat-model",
            "moa_graph",
            _AS_SHIPPED,
            _AS_SHIPPED,
            "MoAChatModel(...).ainvoke, no model_factory",
            lambda s: _MoAChat(s, _Clients(None)),
            supports_deadline=True,
            supports_quorum=True,
        ),
        _info(
            "chat-model+aiohttp",
            "moa_graph",
            "aiohttp (DefaultAioHttpClient)",
            "shared",
            "MoAChatModel with a model_factory sharing one DefaultAioHttpClient; references "
            "through ChatOpenAI.ainvoke",
            lambda s: _MoAChat(s, _Clients("aiohttp")),
            supports_deadline=True,
            supports_quorum=True,
        ),
        _info(
            "middleware",
            "moa_graph",
            _AS_SHIPPED,
            _AS_SHIPPED,
            "create_agent(ChatOpenAI, middleware=[MoAMiddleware(...)]).ainvoke, no "
            "model_factory (the agent's model on the langchain-openai default transport)",
            lambda s: _MoAMiddleware(s, _Clients(None)),
            supports_deadline=True,
            supports_quorum=True,
        ),
    ]
}
"""Every contender by name, in the order the report lists them."""

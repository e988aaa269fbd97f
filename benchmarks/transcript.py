"""Figures 4 and 5 on a realistic agent transcript: tokens to references, prompt-prefix stability.

The transcript is what a coding agent carries into its second user turn: a long system
prompt, the first request, four tool calls with large results (a listing, two files, a test
log), the agent's reply, and the new request. The new turn then runs a tool loop of
`tool_steps` steps; a scripted aggregator (a real `ChatOpenAI` request to the stand-in, whose
reply is replaced by the next `read_file` call) drives it, because the stand-in itself
answers after one tool result.

Token counts are the stand-in's `usage.prompt_tokens`: whitespace-separated words of every
message's text content (no tokenizer is available offline; tool-call arguments and tool
schemas are not counted). Request body bytes, counted from the requests the stand-in
recorded, include everything.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI

from benchmarks.stand_in import StandIn
from benchmarks.workload import (
    PRESET,
    REFERENCE_SYSTEM_PROMPT,
    latency_table,
    moa_config,
    preset_supports,
    reference_names,
)
from moa_graph import MoAChatModel, ModelSpec, build_moa_graph, reference_messages
from moa_graph.prompts import GUIDANCE_TITLE
from moa_graph.trimming import last_human_index

__all__ = ["agent_transcript", "prefix_and_tokens", "read_file"]

_LOOP_AGGREGATOR = "agg-loop"
_COUNTER = "count"
_FANOUT_KEY = "fanout"
_RNG_SEED = 7
_WORDS = (  # noqa: SIM905 (a sentence reads better than a column of words)
    "ledger entry amount currency merchant retry budget settle batch window payout refund "
    "invoice account balance cursor offset page limit status pending failed posted queue "
    "worker lease deadline clock skew idempotency key request response header timeout"
).split()

SYSTEM_PROMPT_PARAGRAPHS = [
    "You are a senior software engineer working as an autonomous coding agent inside the "
    "payments monorepo. You act through tools: list_files, read_file, run_tests, "
    "apply_patch and search_code. You never guess the contents of a file you have not read.",
    "Repository conventions: Python 3.11, type hints everywhere, pydantic models for every "
    "payload that crosses a service boundary, structured logging with the request id, no "
    "print statements, and one behaviour per test named after the behaviour it pins.",
    "Money is always an integer number of minor units with an ISO currency code; never a "
    "float. Every write to the ledger is idempotent under its idempotency key, and every "
    "retry goes through the shared retry budget so that an outage cannot amplify load.",
]


def _system_prompt() -> str:
    rules = [
        f"Rule {i}: before changing {word} handling, read the module that owns it, run its "
        f"tests, and explain in one sentence why the change is safe for {other} flows."
        for i, (word, other) in enumerate(zip(_WORDS, reversed(_WORDS), strict=True), start=1)
    ]
    return "\n\n".join([*SYSTEM_PROMPT_PARAGRAPHS, *rules, *SYSTEM_PROMPT_PARAGRAPHS])


def _code(path: str, lines: int) -> str:
    """Deterministic Python-looking file contents, about 10 words a line."""
    rng = random.Random(f"{_RNG_SEED}:{path}")
    out = [f"# {path}", "from __future__ import annotations", ""]
    for i in range(lines):
        a, b, c = rng.sample(_WORDS, 3)
        if i % 12 == 0:
            out.append(f"def {a}_{b}({c}: Ledger, {a}: int | None = None) -> {b.title()}:")
        elif i % 12 == 11:
            out.append(f"    return {a}_{c}({b}, key={c}.{a})")
        else:
            out.append(f"    {a}_{b} = {c}.{rng.choice(_WORDS)}({a}, {b}={c}_{a}, strict=True)")
    return "\n".join(out)


def _log(lines: int) -> str:
    rng = random.Random(_RNG_SEED)
    out = []
    for i in range(lines):
        a, b = rng.sample(_WORDS, 2)
        status = "FAILED" if i == lines - 7 else "PASSED"
        out.append(f"tests/test_ledger.py::test_{a}_{b}_{i} {status} [{100 * i // lines:3d}%]")
    out.append("E   AssertionError: retry budget exhausted for merchant m-42 after 3 attempts")
    return "\n".join(out)


def _call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def agent_transcript() -> list[BaseMessage]:
    """The conversation up to and including the second user request."""
    listing = "\n".join(
        f"payments/{a}/{b}_{c}.py" for a, b, c in zip(_WORDS, _WORDS[3:], _WORDS[7:], strict=False)
    )
    return [
        SystemMessage(_system_prompt()),
        HumanMessage(
            "The nightly build fails in the ledger tests since yesterday's merge. Find the "
            "cause and fix it; keep the change small."
        ),
        AIMessage("", tool_calls=[_call("list_files", {"path": "payments"}, "call_1")]),
        ToolMessage(listing, tool_call_id="call_1", name="list_files"),
        AIMessage(
            "I will read the ledger module first.",
            tool_calls=[_call("read_file", {"path": "payments/ledger.py"}, "call_2")],
        ),
        ToolMessage(_code("payments/ledger.py", 260), tool_call_id="call_2", name="read_file"),
        AIMessage("", tool_calls=[_call("read_file", {"path": "tests/test_ledger.py"}, "call_3")]),
        ToolMessage(_code("tests/test_ledger.py", 180), tool_call_id="call_3", name="read_file"),
        AIMessage("", tool_calls=[_call("run_tests", {"path": "tests/test_ledger.py"}, "call_4")]),
        ToolMessage(_log(220), tool_call_id="call_4", name="run_tests"),
        AIMessage(
            "The failure comes from the retry budget: yesterday's merge made `settle_batch` "
            "retry a posted entry under a fresh idempotency key, so each retry is a new write "
            "and the shared budget for merchant m-42 runs out after three attempts. I changed "
            "`settle_batch` to reuse the entry's original key and added a test that retries a "
            "posted entry twice and expects one ledger write. The ledger tests pass now."
        ),
        HumanMessage(
            "Thanks. Now make the retry budget configurable per merchant, with the current "
            "value as the default, and tell me what else we should test before we ship it."
        ),
    ]


@tool
def read_file(path: str) -> str:
    """Read a file of the repository."""
    return _code(path, 150)


class ScriptedAggregator(BaseChatModel):
    """The aggregator of a tool loop: a real request, then `read_file` until `steps` are done.

    The request goes to the stand-in like any aggregator call (it is recorded there, with its
    latency); only the reply is replaced, by the next tool call, so the loop has `steps`
    tool steps whatever the stand-in would have answered.
    """

    inner: ChatOpenAI
    steps: int

    @property
    def _llm_type(self) -> str:
        return "scripted-aggregator"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Pass the tools on to the real request."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._scripted(messages, self.inner.invoke(messages, stop=stop, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = await self.inner.ainvoke(messages, stop=stop, **kwargs)
        return self._scripted(messages, reply)

    def _scripted(self, messages: list[BaseMessage], reply: BaseMessage) -> ChatResult:
        # The guidance is a user message too; a re-run's comes after the tool results.
        said = [m for m in messages if not str(m.content).startswith(GUIDANCE_TITLE)]
        turn = last_human_index(said) or 0
        done = sum(isinstance(m, ToolMessage) for m in said[turn:])
        if done < self.steps:
            step = done + 1
            reply = AIMessage(
                "",
                tool_calls=[_call("read_file", {"path": f"payments/step_{step}.py"}, f"s{step}")],
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])


def _chat(url: str, model: str, client: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=url, api_key="not-needed", max_retries=0, http_async_client=client
    )


def _factory(url: str, steps: int, client: Any) -> Any:
    def build(spec: ModelSpec) -> BaseChatModel:
        model = _chat(url, spec.model, client)
        if spec.model == _LOOP_AGGREGATOR:
            return ScriptedAggregator(inner=model, steps=steps)
        return model

    return build


async def prefix_and_tokens(stand_in: StandIn, *, n_refs: int, steps: int) -> dict[str, Any]:
    """Figures 4 and 5: tokens sent to references, reference calls and prefix stability."""
    stand_in.configure(latency_table(n_refs, reference_s=0.0, aggregator_s=0.0))
    transcript = agent_transcript()
    # A client of this event loop's own (langchain-openai's default one is process-wide).
    async with openai.DefaultAsyncHttpxClient() as client:
        return await _prefix_and_tokens(stand_in, transcript, client, n_refs=n_refs, steps=steps)


async def _prefix_and_tokens(
    stand_in: StandIn, transcript: list[BaseMessage], client: Any, *, n_refs: int, steps: int
) -> dict[str, Any]:
    counter = _chat(stand_in.url, _COUNTER, client)

    async def sent(messages: list[BaseMessage]) -> dict[str, int]:
        stand_in.reset()
        reply = await counter.ainvoke(messages)
        body = stand_in.requests(_COUNTER)[-1]
        usage = reply.usage_metadata or {"input_tokens": 0}
        return {"words": usage["input_tokens"], "bytes": len(_wire(body["messages"]))}

    advisor = SystemMessage(REFERENCE_SYSTEM_PROMPT)
    full = await sent([advisor, *transcript])
    trimmed = await sent([advisor, *reference_messages(transcript)])

    loops = {}
    for label, run in (("graph", _graph_loop), ("chat_model", _chat_model_loop)):
        stand_in.reset()
        messages = await run(stand_in.url, n_refs, steps, transcript, client)
        loops[label] = _loop_record(stand_in, n_refs, steps)
        if label == "graph":
            end_of_loop = messages
    mid_turn = await sent([advisor, *reference_messages(end_of_loop, tool_activity=True)])

    every_step: dict[str, Any] = {"status": "pending", "reason": "Preset has no 'fanout' key yet"}
    if preset_supports(_FANOUT_KEY):
        stand_in.reset()
        await _graph_loop(stand_in.url, n_refs, steps, transcript, client, fanout="every_step")
        every_step = {"status": "measured", **_loop_record(stand_in, n_refs, steps)}
    every_2: dict[str, Any] = {"status": "pending", "reason": "Preset has no 'fanout' key yet"}
    if preset_supports(_FANOUT_KEY):  # between re-runs: the fresh-advice note ends each input
        stand_in.reset()
        await _graph_loop(stand_in.url, n_refs, steps, transcript, client, fanout="every_n:2")
        every_2 = {"status": "measured", **_loop_record(stand_in, n_refs, steps)}

    return {
        "tokens": {
            "unit": "stand-in prompt_tokens = whitespace-separated words of message text "
            "(not a tokenizer); bytes = the request's JSON messages",
            "n_refs": n_refs,
            "per_reference": {
                "full_transcript": full,
                "trimmed_view": trimmed,
                "mid_turn_view_with_tool_activity": mid_turn,
            },
            "per_turn": {
                "full_transcript": {k: v * n_refs for k, v in full.items()},
                "trimmed_view": {k: v * n_refs for k, v in trimmed.items()},
            },
            "trimmed_share_of_full": trimmed["words"] / full["words"],
            "measured_in_graph": loops["graph"]["reference_words_per_turn"],
        },
        "tool_loop": {
            "steps": steps,
            "per_turn": loops["graph"],
            "chat_model_per_turn": loops["chat_model"],
            "every_step": every_step,
        },
        "prefix": {
            "definition": "cached share at step k = longest common byte prefix of the "
            "aggregator's messages at steps k-1 and k, over the length of step k-1's "
            "(1.0: all of the previous request can come from a prompt cache)",
            "graph": loops["graph"]["prefix"],
            "chat_model": loops["chat_model"]["prefix"],
            "graph_every_step": every_step.get("prefix"),
            "graph_every_n_2": every_2.get("prefix"),
        },
    }


async def _graph_loop(
    url: str,
    n_refs: int,
    steps: int,
    transcript: list[BaseMessage],
    client: Any,
    fanout: str | None = None,
) -> list[BaseMessage]:
    extra = {_FANOUT_KEY: fanout} if fanout else None
    config = moa_config(url, n_refs, aggregator=_LOOP_AGGREGATOR, extra=extra)
    graph = build_moa_graph(
        PRESET, tools=[read_file], config=config, model_factory=_factory(url, steps, client)
    ).compile()
    out = await graph.ainvoke({"messages": list(transcript)})
    messages: list[BaseMessage] = out["messages"]
    return messages


async def _chat_model_loop(
    url: str, n_refs: int, steps: int, transcript: list[BaseMessage], client: Any
) -> list[BaseMessage]:
    """The agent loop `create_agent` runs, by hand: call the model, run its tool calls."""
    model = MoAChatModel(
        preset=PRESET,
        config=moa_config(url, n_refs, aggregator=_LOOP_AGGREGATOR),
        model_factory=_factory(url, steps, client),
    ).bind_tools([read_file])
    messages = list(transcript)
    tools: dict[str, BaseTool] = {read_file.name: read_file}
    for _ in range(steps + 1):
        reply = await model.ainvoke(messages)
        messages.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            break
        for call in reply.tool_calls:
            result = await tools[call["name"]].ainvoke(call["args"])
            messages.append(ToolMessage(result, tool_call_id=call["id"], name=call["name"]))
    return messages


def _loop_record(stand_in: StandIn, n_refs: int, steps: int) -> dict[str, Any]:
    counts = stand_in.stats()["requests"]
    names = reference_names(n_refs)
    reference_bodies = [body for name in names for body in stand_in.requests(name)]
    aggregator_bodies = stand_in.requests(_LOOP_AGGREGATOR)
    return {
        "reference_calls_per_turn": sum(counts.get(name, 0) for name in names),
        "aggregator_calls_per_turn": counts.get(_LOOP_AGGREGATOR, 0),
        "reference_words_per_turn": sum(_words(body["messages"]) for body in reference_bodies),
        "reference_bytes_per_turn": sum(len(_wire(body["messages"])) for body in reference_bodies),
        "prefix": _prefix_stability(aggregator_bodies),
    }


def _prefix_stability(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    steps = []
    for k in range(1, len(bodies)):
        before, after = _wire(bodies[k - 1]["messages"]), _wire(bodies[k]["messages"])
        common = _common_prefix(before, after)
        params_before = {key: v for key, v in bodies[k - 1].items() if key != "messages"}
        params_after = {key: v for key, v in bodies[k].items() if key != "messages"}
        steps.append(
            {
                "step": k,
                "previous_bytes": len(before),
                "bytes": len(after),
                "common_prefix_bytes": common,
                "cached_share": common / len(before),
                "share_of_step": common / len(after),
                "other_fields_identical": params_before == params_after,
            }
        )
    return {
        "requests": len(bodies),
        "steps": steps,
        "min_cached_share": min((s["cached_share"] for s in steps), default=float("nan")),
    }


def _wire(messages: list[dict[str, Any]]) -> bytes:
    """The messages as the provider reads them, one JSON object after another."""
    return b"".join(
        json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode() for m in messages
    )


def _words(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(str(p.get("text", "")).split()) for p in content)
    return total


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    low, high = 0, n  # binary search on equal prefixes: fast for megabyte requests
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low

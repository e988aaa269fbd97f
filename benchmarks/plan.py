"""How big each figure is: the full run (`FULL`, ~10 minutes on 2 cores) and `QUICK` (seconds).

C = 500 conversations with 8 references is 4,500 requests per round, so the big cells run
once and the small ones twice or three times; every row says how many turns it pooled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FULL", "QUICK", "Plan"]

_FANOUT = [
    "raw-aiohttp",
    "sequential",
    "thread-pool-8",
    "chatopenai",
    "chatopenai+aiohttp",
    "graph",
    "graph+aiohttp",
    "chat-model",
    "chat-model+aiohttp",
    "middleware",
]
_CONCURRENCY = [
    "raw-aiohttp",
    "sequential",
    "thread-pool-8",
    "chatopenai",
    "chatopenai+aiohttp",
    "graph",
    "graph+httpx-per-model",
    "graph+aiohttp",
    "chat-model",
    "chat-model+aiohttp",
]
_MAX_CONCURRENCY = {
    "sequential": 100,
    "thread-pool-8": 100,
    "graph+httpx-per-model": 100,
    "chat-model": 100,
    "chat-model+aiohttp": 100,
}
_STRAGGLERS = ["raw-aiohttp", "graph", "graph+aiohttp", "chat-model"]
_TAILS = ["graph"]


@dataclass(frozen=True)
class Plan:
    """Sizes and contenders of every figure."""

    name: str
    isolate: bool
    """A worker process per contender (True), or every contender in this process."""
    reference_s: float = 0.2
    aggregator_s: float = 0.2
    # (1) fan-out width
    fanout_refs: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    fanout_repeats: int = 3
    fanout_turns: int = 1
    fanout_contenders: list[str] = field(default_factory=lambda: list(_FANOUT))
    sequential_max_refs: int = 4
    """Sequential references take N x 200 ms; wider presets are not run."""
    # (2) concurrency
    concurrency_refs: int = 8
    concurrency_levels: tuple[int, ...] = (1, 10, 100, 500)
    concurrency_turns: dict[int, int] = field(default_factory=lambda: {1: 2, 10: 2, 100: 1, 500: 1})
    """Turns each conversation runs in a row, per concurrency."""
    concurrency_repeats: dict[int, int] = field(
        default_factory=lambda: {1: 2, 10: 2, 100: 1, 500: 1}
    )
    concurrency_contenders: list[str] = field(default_factory=lambda: list(_CONCURRENCY))
    max_concurrency: dict[str, int] = field(default_factory=lambda: dict(_MAX_CONCURRENCY))
    """Contenders not run above a concurrency: at C = 500 a LangChain contender's cell takes
    25-50 s of CPU on this machine, so only the floors and the graph variants that answer a
    question there (transport, sharing) run it; the thread pool would need 9 x C threads."""
    # (3) stragglers
    straggler_refs: int = 8
    straggler_factor: float = 10.0
    deadline_s: float = 0.5
    straggler_concurrency: int = 10
    straggler_turns: int = 1
    straggler_solo_turns: int = 3
    """Turns of the one-conversation deadline rows (one round)."""
    straggler_repeats: int = 2
    straggler_contenders: list[str] = field(default_factory=lambda: list(_STRAGGLERS))
    # (7) heavy tails: wait-all, a deadline, quorum
    tail_refs: int = 8
    tail_median_s: float = 2.0
    """Median reference latency: 10x the fan-out figure's 200 ms reference."""
    tail_sigma: float = 0.7
    """Lognormal spread: a call's p99 is exp(2.33 x 0.7) = 5.1x its median (10.2 s)."""
    tail_deadline_s: float = 4.0
    """`references_deadline_s` of the deadline row: twice the median (a call's p84)."""
    tail_grace_s: float = 0.25
    """`quorum_grace_s` of the rows with a grace."""
    tail_concurrency: int = 10
    tail_turns: int = 4
    tail_repeats: int = 1
    tail_stagger_s: float = 0.1
    """Conversation k starts k x this after the first (turns do not start on one tick)."""
    tail_contenders: list[str] = field(default_factory=lambda: list(_TAILS))
    # (8) cost: the gate and the reference budget on a mixed workload
    cost_refs: int = 8
    cost_turns: int = 12
    """Turns per policy (half trivial, half hard, alternating), one conversation."""
    gate_s: float = 0.05
    """Latency of the stand-in gate model."""
    # (4, 5) the agent transcript and its tool loop
    transcript_refs: int = 8
    tool_steps: int = 5
    # (6) start-up
    import_repeats: int = 3
    build_repeats: int = 20
    startup_detail: bool = True
    """Also time whole processes and break the import down with `-X importtime`."""


FULL = Plan(name="full", isolate=True)

QUICK = Plan(
    name="quick",
    isolate=False,
    reference_s=0.02,
    aggregator_s=0.02,
    fanout_refs=(1, 8),
    fanout_repeats=1,
    sequential_max_refs=4,
    concurrency_refs=2,
    concurrency_levels=(1, 4),
    concurrency_turns={1: 1, 4: 1},
    concurrency_repeats={1: 1, 4: 1},
    max_concurrency={"thread-pool-8": 1},
    straggler_refs=3,
    deadline_s=0.06,
    straggler_concurrency=2,
    straggler_turns=1,
    straggler_solo_turns=1,
    straggler_repeats=1,
    tail_refs=4,
    tail_median_s=0.03,
    tail_sigma=0.5,
    tail_deadline_s=0.06,
    tail_grace_s=0.01,
    tail_concurrency=2,
    tail_turns=2,
    tail_stagger_s=0.01,
    cost_turns=4,
    gate_s=0.005,
    transcript_refs=2,
    tool_steps=2,
    import_repeats=1,
    build_repeats=2,
    startup_detail=False,
)

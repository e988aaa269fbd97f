"""The PNG plots of a run (matplotlib, Agg backend), one per figure, beside the report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import contender_names

__all__ = ["write_plots"]

_STYLE = {  # baselines dashed or dotted, moa_graph solid; one colour per contender
    "raw-aiohttp": ("black", "--"),
    "sequential": ("#999999", ":"),
    "thread-pool-8": ("#8c564b", ":"),
    "chatopenai": ("#1f77b4", "--"),
    "chatopenai+aiohttp": ("#17becf", "--"),
    "graph": ("#d62728", "-"),
    "graph+httpx-per-model": ("#ff9896", "-"),
    "graph+aiohttp": ("#2ca02c", "-"),
    "graph+aiohttp-per-model": ("#98df8a", "-"),
    "chat-model": ("#9467bd", "-"),
    "chat-model+aiohttp": ("#e377c2", "-"),
    "middleware": ("#bcbd22", "-"),
}


def write_plots(results: dict[str, Any], folder: Path) -> list[str]:
    """Write one PNG per figure into `folder`; return the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    plotters: list[tuple[str, Callable[[Any, dict[str, Any]], None], tuple[float, float]]] = [
        ("fanout", _plot_fanout, (12, 4.5)),
        ("concurrency", _plot_concurrency, (12, 8)),
        ("stragglers", _plot_stragglers, (11, 5)),
        ("tokens", _plot_tokens, (11, 4.5)),
        ("prefix", _plot_prefix, (7, 4.5)),
        ("startup", _plot_startup, (12, 4.5)),
        ("tails", _plot_tails, (12, 4.5)),
        ("cost", _plot_cost, (12, 4.5)),
    ]
    for key, plot, size in plotters:
        data = results.get(key)
        if data is None or data.get("pending"):
            continue
        figure = plt.figure(figsize=size, dpi=100)
        plot(figure, results)
        figure.tight_layout()
        figure.savefig(folder / f"{key}.png")
        plt.close(figure)
        written.append(f"{key}.png")
    return written


def _plot_fanout(figure: Any, results: dict[str, Any]) -> None:
    data = results["fanout"]
    left, right = figure.subplots(1, 2)
    for name in contender_names(data["rows"]):
        rows = sorted((r for r in data["rows"] if r["contender"] == name), key=_by("n_refs"))
        xs = [r["n_refs"] for r in rows]
        left.plot(xs, [r["p50_s"] for r in rows], marker="o", label=name, **_line(name))
        if name not in ("sequential", "thread-pool-8"):
            right.plot(
                xs, [100 * r["overhead_p50"] for r in rows], marker="o", label=name, **_line(name)
            )
    left.axhline(data["floor_s"], color="grey", linewidth=3, alpha=0.4, label="floor")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="references N",
        ylabel="p50 wall per turn (s)",
        title="Wall per turn vs fan-out width",
    )
    right.axhline(5, color="grey", linestyle=":", label="5% target (N=8)")
    right.axhline(10, color="grey", linestyle="--", label="10% target (N=64)")
    right.set(
        xscale="log",
        xlabel="references N",
        ylabel="overhead over floor (%)",
        title="Overhead over the floor (async contenders)",
    )
    for axis in (left, right):
        _ticks(axis.xaxis, data["n_refs"])
        axis.grid(alpha=0.3)
    _plain(left.yaxis)
    left.legend(fontsize=7)
    right.legend(fontsize=7)


def _plot_concurrency(figure: Any, results: dict[str, Any]) -> None:
    data = results["concurrency"]
    axes = figure.subplots(2, 2).flatten()
    panels = [
        ("turns_per_s", "turns / s", "Throughput", "log"),
        ("p99_s", "p99 wall per turn (s)", "Tail latency", "log"),
        ("cpu_ms_per_turn", "client CPU ms / turn", "Client CPU per turn", "linear"),
        ("peak_rss_mb", "peak RSS (MB)", "Client peak RSS", "linear"),
    ]
    for axis, (key, label, title, yscale) in zip(axes, panels, strict=True):
        for name in contender_names(data["rows"]):
            rows = sorted(
                (r for r in data["rows"] if r["contender"] == name), key=_by("concurrency")
            )
            axis.plot(
                [r["concurrency"] for r in rows],
                [r[key] for r in rows],
                marker="o",
                label=name,
                **_line(name),
            )
        axis.set(
            xscale="log",
            yscale=yscale,
            xlabel="concurrent conversations C",
            ylabel=label,
            title=title,
        )
        _ticks(axis.xaxis, data["levels"])
        if yscale == "log":
            _plain(axis.yaxis)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)


def _plot_stragglers(figure: Any, results: dict[str, Any]) -> None:
    data = results["stragglers"]
    axis = figure.subplots()
    labels = [
        f"{r['contender']}\n{'no deadline' if r['deadline_s'] is None else 'deadline'}"
        f", C={r['concurrency']}"
        for r in data["rows"]
    ]
    xs = range(len(labels))
    axis.bar([x - 0.2 for x in xs], [r["p50_s"] for r in data["rows"]], 0.4, label="p50")
    axis.bar([x + 0.2 for x in xs], [r["p99_s"] for r in data["rows"]], 0.4, label="p99")
    axis.scatter(
        list(xs),
        [r["bound_s"] for r in data["rows"]],
        color="black",
        marker="_",
        s=400,
        label="bound",
        zorder=3,
    )
    axis.set_xticks(list(xs), labels, fontsize=7, rotation=30, ha="right")
    axis.set(ylabel="wall per turn (s)", title="One straggler at 10x latency")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")


def _plot_tokens(figure: Any, results: dict[str, Any]) -> None:
    tokens = results["tokens"]
    left, right = figure.subplots(1, 2)
    per_turn = tokens["per_turn"]
    left.bar(
        ["full transcript", "trimmed view"],
        [per_turn["full_transcript"]["words"], per_turn["trimmed_view"]["words"]],
    )
    left.set(
        ylabel="words sent to references per turn",
        title=f"Reference input per turn ({tokens['n_refs']} references)",
    )
    loop = results.get("tool_loop")
    if loop is not None:
        every = loop["every_step"]
        values = [
            loop["per_turn"]["reference_calls_per_turn"],
            every.get("reference_calls_per_turn", 0),
        ]
        bars = right.bar(["per_turn", "every_step"], values)
        if every["status"] != "measured":
            bars[1].set_hatch("//")
            right.text(1, 0.5, "pending", ha="center")
        right.set(
            ylabel="reference calls per turn",
            title=f"Reference calls over a {loop['steps']}-step tool loop",
        )
    for axis in (left, right):
        axis.grid(alpha=0.3, axis="y")


def _plot_prefix(figure: Any, results: dict[str, Any]) -> None:
    data = results["prefix"]
    axis = figure.subplots()
    # The per_turn drivers coincide at 1.0: different markers and widths keep both visible.
    drivers = {"graph": ("o", 4), "chat_model": ("s", 1.5), "graph_every_step": ("D", 1.5)}
    for name, (marker, width) in drivers.items():
        if not data.get(name):
            continue
        steps = data[name]["steps"]
        axis.plot(
            [s["step"] for s in steps],
            [s["cached_share"] for s in steps],
            marker=marker,
            linewidth=width,
            label=f"{name}: cached share",
        )
        axis.plot(
            [s["step"] for s in steps],
            [s["share_of_step"] for s in steps],
            marker="x",
            linestyle=":",
            label=f"{name}: share of step",
        )
    axis.axhline(0.95, color="grey", linestyle="--", label="0.95 target")
    axis.set_xticks(range(1, 1 + max(len(data["graph"]["steps"]), 1)))
    axis.set(
        ylim=(0, 1.05),
        xlabel="tool step k",
        ylabel="byte-identical prefix share",
        title="Aggregator prompt prefix, step k vs k-1",
    )
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)


def _plot_startup(figure: Any, results: dict[str, Any]) -> None:
    data = results["startup"]
    packages = data["heaviest_imports"]["packages"][:10]
    left, right = figure.subplots(1, 2) if packages else (figure.subplots(), None)
    steps = {
        "import moa_graph": data["import_s"],
        "import langchain_openai\n(first turn)": data["first_turn_models"][
            "import_langchain_openai_s"
        ],
        "first ChatOpenAI\n(first turn)": data["first_turn_models"]["first_chatopenai_s"],
        "build + compile": data["build_compile"]["first_s"],
    }
    left.barh(list(steps)[::-1], [1000 * v for v in steps.values()][::-1])
    left.set(xlabel="ms (fresh process)", title="Start-up")
    left.grid(alpha=0.3, axis="x")
    if right is not None:
        right.barh([p["name"] for p in packages][::-1], [p["self_ms"] for p in packages][::-1])
        right.set(
            xlabel="self import time (ms, -X importtime)", title="import moa_graph by package"
        )
        right.grid(alpha=0.3, axis="x")


def _plot_tails(figure: Any, results: dict[str, Any]) -> None:
    data = results["tails"]
    rows = data["rows"]
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    labels = [r["policy"].replace(", ", "\n") for r in rows]
    xs = list(range(len(rows)))
    left.bar([x - 0.2 for x in xs], [r["p50_s"] for r in rows], 0.4, label="p50")
    left.bar([x + 0.2 for x in xs], [r["p99_s"] for r in rows], 0.4, label="p99")
    left.scatter(
        [x + 0.2 for x in xs],
        [r["bound_p99_s"] for r in rows],
        color="black",
        marker="_",
        s=300,
        label="p99 of awaited + aggregator",
        zorder=3,
    )
    left.set_xticks(xs, labels, fontsize=7)
    left.set(
        ylabel="wall per turn (s)",
        title=f"{data['n_refs']} lognormal references (median {data['median_s']:g} s, "
        f"sigma {data['sigma']:g})",
    )
    left.legend(fontsize=8)
    left.grid(alpha=0.3, axis="y")
    right.barh(labels[::-1], [r["answered_per_turn"] for r in rows][::-1], color="#2ca02c")
    right.axvline(data["n_refs"], color="grey", linestyle=":")
    right.tick_params(axis="y", labelsize=7)
    right.set(xlabel="answers kept per turn", title="Answers the aggregator got")
    right.grid(alpha=0.3, axis="x")


def _plot_cost(figure: Any, results: dict[str, Any]) -> None:
    data = results["cost"]
    rows = data["rows"]
    left, right = figure.subplots(1, 2)
    labels = [r["policy"].replace(" + ", "\n+ ") for r in rows]
    xs = list(range(len(rows)))
    for offset, kind in ((-0.2, "trivial"), (0.2, "hard")):
        left.bar(
            [x + offset for x in xs],
            [1000 * r["by_kind"][kind]["cost_usd_per_turn"] for r in rows],
            0.4,
            label=f"{kind} turns",
        )
        right.bar(
            [x + offset for x in xs],
            [r["by_kind"][kind]["calls_per_turn"] for r in rows],
            0.4,
            label=f"{kind} turns",
        )
    left.set(ylabel="cost per turn (USD x 1000, stand-in prices)", title="Cost per turn")
    right.set(ylabel="model calls per turn", title="Calls per turn (references, gate, aggregator)")
    for axis in (left, right):
        axis.set_xticks(xs, labels, fontsize=7, rotation=20, ha="right")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3, axis="y")


def _line(name: str) -> dict[str, Any]:
    color, style = _STYLE.get(name, (None, "-"))
    return {"color": color, "linestyle": style}


def _ticks(axis: Any, values: Sequence[int]) -> None:
    """Label a log axis at `values` only, as plain numbers."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(FixedLocator(list(values)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _plain(axis: Any) -> None:
    """Plain numbers (not powers of ten) on a log axis."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # Minor ticks labelled at 2x and 5x each power of ten only.
    axis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else "")
    )


def _by(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row[key]

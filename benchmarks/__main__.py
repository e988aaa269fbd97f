"""`python -m benchmarks`: run the benchmarks, re-render a report, or profile one contender.

python -m benchmarks run                 # everything; writes docs/benchmarks.md and
                                         # docs/benchmarks/{results.json,*.png}
python -m benchmarks run --quick         # smoke run (seconds) into build/benchmarks-quick
python -m benchmarks run --only fanout,stragglers --out build/partial
python -m benchmarks report docs/benchmarks/results.json      # re-render tables and plots
python -m benchmarks profile graph --concurrency 100          # pyinstrument, one cell
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.plan import FULL, QUICK
from benchmarks.runner import FIGURES, render, run
from benchmarks.targets import evaluate

_DOCS = Path(__file__).resolve().parent.parent / "docs"
_QUICK_OUT = Path("build/benchmarks-quick")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    args = _parser().parse_args(argv)
    return int(args.handler(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(required=True)

    run_ = commands.add_parser("run", help="run the benchmarks and write the report")
    run_.add_argument("--quick", action="store_true", help="tiny sizes, all in one process")
    run_.add_argument(
        "--out", type=Path, help=f"output folder (default {_DOCS}, or {_QUICK_OUT} with --quick)"
    )
    run_.add_argument("--only", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    run_.set_defaults(handler=_run)

    report = commands.add_parser("report", help="re-render the report from a results.json")
    report.add_argument("results", type=Path)
    report.add_argument("--out", type=Path, help="output folder (default: the JSON's parent's)")
    report.set_defaults(handler=_report)

    profile = commands.add_parser("profile", help="profile one contender's cell (pyinstrument)")
    profile.add_argument("contender")
    profile.add_argument("--refs", type=int, default=8)
    profile.add_argument("--concurrency", type=int, default=100)
    profile.add_argument("--turns", type=int, default=1)
    profile.add_argument("--latency", type=float, default=0.2, help="every model's latency (s)")
    profile.add_argument("--html", type=Path, help="also write pyinstrument's HTML here")
    profile.set_defaults(handler=_profile)
    return parser


def _run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    out = args.out or (_QUICK_OUT if args.quick else _DOCS)
    only = args.only.split(",") if args.only else FIGURES
    unknown = set(only) - set(FIGURES)
    if unknown:
        print(f"unknown figure(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    results = run(plan, out, only=only, log=log)
    _print_targets(results["targets"])
    print(f"report: {out / 'benchmarks.md'}; results: {out / 'benchmarks' / 'results.json'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    results = json.loads(args.results.read_text(encoding="utf-8"))
    results["targets"] = evaluate(results)
    out = args.out or args.results.resolve().parent.parent
    print(f"report: {render(results, out)}")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from pyinstrument import Profiler

    from benchmarks.stand_in import StandIn
    from benchmarks.worker import ContenderHost
    from benchmarks.workload import latency_table

    with StandIn() as stand_in:
        host = ContenderHost(args.contender, stand_in.url)

        async def session() -> dict[str, object]:
            stand_in.configure(latency_table(args.refs, reference_s=0.0, aggregator_s=0.0))
            await host.warm(n_refs=args.refs, turns=2)
            stand_in.configure(
                latency_table(args.refs, reference_s=args.latency, aggregator_s=args.latency)
            )
            profiler = Profiler(async_mode="disabled", interval=0.0005)
            with profiler:
                cell = await host.cell(
                    n_refs=args.refs, concurrency=args.concurrency, turns=args.turns
                )
            await host.aclose()
            _print_profile(profiler)
            if args.html:
                args.html.write_text(profiler.output_html(), encoding="utf-8")
            return cell

        cell = asyncio.run(session())
    turns = max(int(cell["turns"]), 1)  # type: ignore[call-overload]
    print(
        f"{args.contender}: {cell['turns']} turns, {cell['errors']} errors, wall "
        f"{cell['wall_s']:.2f} s, CPU {1000 * float(cell['cpu_s']) / turns:.1f} ms/turn "  # type: ignore[arg-type]
        "(with the profiler's own overhead)"
    )
    return 0


def _print_profile(profiler: Any) -> None:
    """CPU by package, then the functions with the most self time."""
    by_package: dict[str, float] = {}
    by_function: dict[str, float] = {}
    stack = [profiler.last_session.root_frame()]
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic:
            continue
        path = frame.file_path or ""
        package = _package(path)
        by_package[package] = by_package.get(package, 0.0) + frame.total_self_time
        where = f"{frame.function}  {package}/{Path(path).name}:{frame.line_no}"
        by_function[where] = by_function.get(where, 0.0) + frame.total_self_time
    total = sum(by_package.values()) or 1.0
    for title, table, rows in (
        ("self time by package", by_package, 15),
        ("self time by function", by_function, 30),
    ):
        print(f"{title}:")
        for name, seconds in sorted(table.items(), key=lambda item: -item[1])[:rows]:
            print(f"  {seconds:7.3f} s  {100 * seconds / total:5.1f}%  {name}")


def _package(path: str) -> str:
    """`langchain_core`, `asyncio`, ... from a source path."""
    parts = Path(path).parts
    for marker in ("site-packages", "python3.11"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else marker
    return Path(path).parent.name or path


def _print_targets(targets: list[dict[str, object]]) -> None:
    print("\ntargets:")
    for target in targets:
        print(
            f"  [{str(target['status']).upper():8}] {target['target']} - {target['contender']}: "
            f"{target['value']} (limit {target['limit']})"
        )


if __name__ == "__main__":
    sys.exit(main())

"""`moa-graph eval`: evaluate a preset's arms on a dataset and write the report.

`add_eval_parser(subparsers)` adds the command to the `moa-graph` parser; `run_eval(args)`
runs it and returns the exit status. Like the other commands it imports only the standard
library up front (so `moa-graph --help` stays fast), and bad input (a config, a dataset, an
arm name, a missing key) ends with one line on stderr and status 2, never a traceback.

    moa-graph eval --offline                      # the bundled dataset on the stand-in
    moa-graph eval --config moa.yaml --preset review --dataset questions.jsonl --out eval-out
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa_graph.config import ModelSpec
    from moa_graph.evaluation.results import EvalResult

__all__ = ["add_eval_parser", "run_eval"]

_PROG = "moa-graph"
_USAGE_EXIT = 2
_FAILED_EXIT = 1
_DEFAULT_OUT = "moa-eval"


class _UsageError(Exception):
    """Arguments that cannot run as typed: one line, status 2."""


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `eval` to a `moa-graph` subparsers object; returns its parser.

    The parser's default `handler` is `run_eval`, as the other commands' are.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "eval",
        help="A/B-evaluate a preset's arms on a dataset (win rate vs cost)",
        description=(
            "Run a JSONL dataset through the preset (MoA), its aggregator alone, each "
            "reference alone and Self-MoA; write report.md, report.json and "
            "win_rate_vs_cost.png."
        ),
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="the bundled eval-demo preset on the built-in stand-in server (no network, no keys)",
    )
    parser.add_argument("--preset", help="preset name (default: the config's default)")
    parser.add_argument(
        "--config", help="config file (default: $MOA_GRAPH_CONFIG, ./moa.yaml, ...)"
    )
    parser.add_argument(
        "--dataset",
        metavar="FILE",
        help="JSONL file of {prompt, reference?, id?} (default: the bundled arithmetic set)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=_DEFAULT_OUT,
        help=f"report directory (default: {_DEFAULT_OUT})",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        metavar="ARM",
        help="arms to run: moa, aggregator, ref:<label>, self-moa:<label> (default: all)",
    )
    parser.add_argument(
        "--judge",
        metavar="PROVIDER:MODEL",
        help="pairwise judge for prompts without a reference (offline default: stub:judge)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="calls in flight at once (default: 8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.set_defaults(handler=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """Run `moa-graph eval` with parsed arguments; print the table; return the exit status.

    Status 0 when the report was written, 2 for input that cannot run (config, dataset,
    arms, keys, arguments), 1 when the run itself failed.
    """
    from moa_graph.errors import ConfigError
    from moa_graph.evaluation.dataset import DatasetError

    try:
        result, files = _run(args)
    except (ConfigError, DatasetError, _UsageError) as exc:
        return _fail(f"error: {exc}", _USAGE_EXIT)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # the last line of defence: one line, no traceback, no key
        from moa_graph.failures import describe_error

        return _fail(f"error: {describe_error(exc)}", _FAILED_EXIT)
    from moa_graph.evaluation.report import markdown_report

    print(markdown_report(result, plot=files.plot.name if files.plot else None), end="")
    written = [files.markdown, files.json, *([files.plot] if files.plot else [])]
    print(f"\nwrote {', '.join(str(path) for path in written)}")
    return 0


def _run(args: argparse.Namespace) -> tuple[EvalResult, Any]:
    from moa_graph.evaluation.dataset import bundled_dataset, load_dataset
    from moa_graph.evaluation.report import write_report
    from moa_graph.evaluation.runner import evaluate

    if args.concurrency < 1:
        raise _UsageError(f"--concurrency must be at least 1, not {args.concurrency}")
    dataset = load_dataset(args.dataset) if args.dataset else bundled_dataset()
    judge = _judge(args.judge) if args.judge else None
    options: dict[str, Any] = {
        "arms": args.arms,
        "concurrency": args.concurrency,
        "seed": args.seed,
    }
    if not args.offline:
        from moa_graph.config import load_config
        from moa_graph.errors import ConfigError

        try:
            config = load_config(args.config)
        except ConfigError as exc:  # no config found: the offline demo still runs
            raise ConfigError(
                f"{exc}; or try --offline" if args.config is None else str(exc)
            ) from None
        result = evaluate(dataset, preset=args.preset, config=config, judge=judge, **options)
        return result, write_report(result, args.out)
    if args.config:
        raise _UsageError("--offline runs the bundled eval-demo preset: leave out --config")
    from moa_graph.evaluation.offline import (
        OFFLINE_EVAL_PRESET,
        OFFLINE_JUDGE,
        offline_eval_config,
        offline_eval_models,
    )
    from moa_graph.testing import StubServer

    with StubServer(models=offline_eval_models()) as url:
        config = offline_eval_config(url)
        needs_judge = not dataset.has_references
        result = evaluate(
            dataset,
            preset=args.preset or OFFLINE_EVAL_PRESET,
            config=config,
            judge=judge or (OFFLINE_JUDGE if needs_judge else None),
            **options,
        )
    return result, write_report(result, args.out)


def _judge(text: str) -> ModelSpec:
    from moa_graph.config import ModelSpec

    provider, _, model = text.partition(":")
    if not provider or not model:
        raise _UsageError(f"--judge {text!r}: expected provider:model, e.g. openai:gpt-4o")
    return ModelSpec(provider=provider, model=model)


def _fail(message: str, status: int) -> int:
    sys.stderr.write(" ".join(f"{_PROG}: {message}".splitlines()) + "\n")
    sys.stderr.flush()
    return status

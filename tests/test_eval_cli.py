"""`moa-graph eval`, through the parser `add_eval_parser` builds and `run_eval`."""

import argparse
import json
import subprocess
import sys

import pytest

from moa_graph.evaluation.cli import add_eval_parser, run_eval


def _eval(*argv):
    parser = argparse.ArgumentParser(prog="moa-graph")
    add_eval_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    assert args.handler is run_eval
    return run_eval(args)


def test_eval_offline_writes_the_report_and_plot_of_the_bundled_dataset(tmp_path, capsys):
    out = tmp_path / "report"
    assert _eval("--offline", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "| `ref:stub:guesser` | stub:guesser alone | 0.21 [" in printed
    assert (
        f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'win_rate_vs_cost.png'}"
        in printed
    )
    assert (out / "win_rate_vs_cost.png").read_bytes().startswith(b"\x89PNG")
    record = json.loads((out / "report.json").read_text())
    assert record["preset"] == "eval-demo" and record["dataset"] == "arithmetic"


def test_eval_offline_runs_the_arms_asked_for(tmp_path, capsys):
    assert _eval("--offline", "--out", str(tmp_path), "--arms", "ref:stub:guesser") == 0
    record = json.loads((tmp_path / "report.json").read_text())
    assert [arm["name"] for arm in record["arms"]] == ["aggregator", "ref:stub:guesser"]


def test_eval_offline_judges_a_dataset_without_references_with_the_stand_in_judge(tmp_path, capsys):
    dataset = tmp_path / "open.jsonl"
    dataset.write_text('{"prompt": "What is 17 * 23?"}\n{"prompt": "What is 2 ** 10?"}\n')
    argv = ["--offline", "--dataset", str(dataset), "--out", str(tmp_path), "--arms", "moa"]
    assert _eval(*argv) == 0
    printed = capsys.readouterr().out
    assert "scored by pairwise judge stub:judge (position-swapped)" in printed
    assert "same position in both orders on 12 of 12 pairs" not in printed  # 2 prompts
    assert "same position in both orders on 2 of 2 pairs" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arms", "ref:nobody"], "error: no arm 'ref:nobody' in this preset; arms: moa,"),
        (["--judge", "gpt-4o"], "error: --judge 'gpt-4o': expected provider:model"),
        (["--concurrency", "0"], "error: --concurrency must be at least 1"),
        (["--config", "moa.yaml"], "error: --offline runs the bundled eval-demo preset"),
        (["--preset", "nope"], "error: MoA preset 'nope' not found"),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, argv, message):
    assert _eval("--offline", "--out", str(tmp_path), *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"moa-graph: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_dataset_line_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    assert _eval("--offline", "--dataset", str(dataset), "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == f"moa-graph: error: {dataset}:2: 'prompt' must be a non-empty string\n"


def test_without_a_config_the_error_suggests_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOA_GRAPH_CONFIG", str(tmp_path / "missing.yaml"))
    assert _eval("--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("moa-graph: error: ") and err.rstrip().endswith("or try --offline")


def test_the_eval_parser_imports_no_model_code():
    code = (
        "import argparse, sys\n"
        "from moa_graph.evaluation.cli import add_eval_parser\n"
        "add_eval_parser(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in ('langchain_core', 'langgraph', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

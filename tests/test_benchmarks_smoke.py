"""The benchmark harness's quick mode runs end to end and writes every figure's section."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# The plots need matplotlib, from the `bench` extra.
pytest.importorskip(
    "matplotlib", reason="pip install -e '.[bench]' to run the benchmark smoke test"
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "benchmarks" / "results.json").read_text(encoding="utf-8"))


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def test_the_quick_run_writes_the_json_the_report_and_a_plot_per_figure(quick_run):
    out, results = quick_run
    assert {
        "meta",
        "fanout",
        "concurrency",
        "stragglers",
        "tokens",
        "tool_loop",
        "prefix",
        "startup",
        "tails",
        "cost",
        "targets",
    } <= set(results)
    report = (out / "benchmarks.md").read_text(encoding="utf-8")
    for title in (
        "## Targets",
        "## 1. Fan-out",
        "## 2. Concurrency",
        "## 3. Stragglers",
        "## 4. Tokens",
        "## 5. Prompt-prefix",
        "## 6. Start-up",
        "## 7. Heavy tails",
        "## 8. Cost",
    ):
        assert title in report
    for plot in (
        "fanout",
        "concurrency",
        "stragglers",
        "tokens",
        "prefix",
        "startup",
        "tails",
        "cost",
    ):
        assert (out / "benchmarks" / f"{plot}.png").stat().st_size > 1000


def test_fanout_rows_are_at_or_above_the_floor_with_no_errors(quick_run):
    _, results = quick_run
    fanout = results["fanout"]
    assert {row["contender"] for row in fanout["rows"]} >= {"raw-aiohttp", "graph", "chat-model"}
    for row in fanout["rows"]:
        assert row["errors"] == 0, row
        assert row["p50_s"] >= fanout["floor_s"] * 0.95, row
        assert row["p99_s"] >= row["p50_s"]
        assert row["reference_calls_per_turn"] == row["n_refs"]


def test_concurrency_rows_have_throughput_cpu_and_memory(quick_run):
    _, results = quick_run
    rows = results["concurrency"]["rows"]
    assert {row["concurrency"] for row in rows} == set(results["concurrency"]["levels"])
    for row in rows:
        assert row["errors"] == 0, row
        assert _positive(row["turns_per_s"]) and _positive(row["cpu_ms_per_turn"])
        assert row["peak_rss_mb"] >= row["start_rss_mb"] > 0
        assert _positive(row["throughput_vs_raw"])


def test_stragglers_wait_for_the_slow_reference_without_a_deadline(quick_run):
    _, results = quick_run
    stragglers = results["stragglers"]
    for row in stragglers["rows"]:
        assert row["errors"] == 0, row
        if row["deadline_s"] is None:
            assert row["p50_s"] >= stragglers["straggler_s"]
    floor = next(
        r for r in stragglers["rows"] if r["contender"] == "raw-aiohttp" and r["deadline_s"]
    )
    assert floor["p99_s"] < stragglers["straggler_s"]
    if not stragglers["deadline_key_supported"]:
        assert stragglers["pending"]


def _tail_row(tails: dict, policy: str) -> dict:
    return next(row for row in tails["rows"] if row["policy"] == policy)


def test_heavy_tails_compare_wait_all_a_deadline_and_quorums_on_lognormal_references(quick_run):
    _, results = quick_run
    tails = results["tails"]
    n = tails["n_refs"]
    assert [row["policy"] for row in tails["rows"]] == [
        "wait for all",
        f"deadline {tails['deadline_s']:g} s",
        f"quorum {n // 2}, grace 0 s",
        f"quorum {n // 2}, grace {tails['grace_s']:g} s",
        f"quorum {n - 1}, grace 0 s",
        f"quorum {n - 1}, grace {tails['grace_s']:g} s",
    ]
    for row in tails["rows"]:
        assert row["errors"] == 0, row
        assert row["turns"] == tails["concurrency"] * tails["turns_per_conversation"]
        assert row["reference_calls_per_turn"] == n
        assert _positive(row["wall_over_bound_p99"]) and row["p99_s"] >= row["p50_s"]
    assert _tail_row(tails, "wait for all")["answered_per_turn"] == n
    # With no grace a quorum of K keeps about K answers (one landing on the same tick may
    # join them) and cuts the rest: the stand-in sees those requests abandoned.
    quorum = _tail_row(tails, f"quorum {n // 2}, grace 0 s")
    assert n // 2 <= quorum["answered_per_turn"] < n
    assert quorum["disconnects"] > 0
    assert quorum["kth_p50_s"] <= quorum["awaited_p50_s"]
    targets = {t["target"] for t in results["targets"]}
    assert f"heavy tails: p50 with quorum {n // 2}, grace 0 ms vs wait-all" in targets


def test_cost_shows_the_gate_skipping_trivial_turns_and_the_budget_leaving_references_out(
    quick_run,
):
    _, results = quick_run
    rows = {row["policy"]: row["by_kind"] for row in results["cost"]["rows"]}
    n = results["cost"]["n_refs"]
    always, off = rows["always consult"], rows["references off"]
    assert always["all"]["reference_calls_per_turn"] == n
    assert off["all"]["calls_per_turn"] == 1
    assert 0 < off["all"]["cost_usd_per_turn"] < always["all"]["cost_usd_per_turn"]
    for gate in ("gate (callable)", "gate (model)"):
        assert rows[gate]["trivial"]["reference_calls_per_turn"] == 0
        assert rows[gate]["hard"]["reference_calls_per_turn"] == n
        assert rows[gate]["all"]["cost_usd_per_turn"] < always["all"]["cost_usd_per_turn"]
    assert rows["gate (model)"]["all"]["gate_calls_per_turn"] == 1
    assert rows["gate (callable)"]["all"]["gate_calls_per_turn"] == 0
    capped = rows["budget cap"]["hard"]
    assert capped["budget_skipped_per_turn"] > 0
    assert capped["reference_calls_per_turn"] == n - capped["budget_skipped_per_turn"]
    assert capped["cost_usd_per_turn"] < always["hard"]["cost_usd_per_turn"]
    assert all(row["gate_mismatches"] == 0 for row in results["cost"]["rows"])


def test_the_trimmed_view_is_smaller_than_the_transcript_and_prefixes_are_measured(quick_run):
    _, results = quick_run
    per_reference = results["tokens"]["per_reference"]
    assert 0 < per_reference["trimmed_view"]["words"] < per_reference["full_transcript"]["words"]
    loop = results["tool_loop"]
    assert loop["per_turn"]["reference_calls_per_turn"] == results["tokens"]["n_refs"]
    assert loop["per_turn"]["aggregator_calls_per_turn"] == loop["steps"] + 1
    for driver in ("graph", "chat_model"):
        prefix = results["prefix"][driver]
        assert len(prefix["steps"]) == loop["steps"]
        assert 0 <= prefix["min_cached_share"] <= 1


def test_startup_times_and_targets_are_reported(quick_run):
    _, results = quick_run
    startup = results["startup"]
    assert _positive(startup["import_s"]) and _positive(startup["build_compile"]["first_s"])
    statuses = {target["status"] for target in results["targets"]}
    assert statuses <= {"met", "missed", "pending", "reported"}
    assert {t["target"].split(" at ")[0] for t in results["targets"]} >= {
        "overhead over the floor",
        "ratio to the raw aiohttp floor",
    }

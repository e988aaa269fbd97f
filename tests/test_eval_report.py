"""The evaluation report: the Markdown table, the JSON record and the win-rate-vs-cost plot."""

import json

import pytest

from moa_graph.evaluation import (
    Dataset,
    bundled_dataset,
    evaluate,
    markdown_report,
    offline_eval_config,
    offline_eval_models,
    plot_win_rate_vs_cost,
    write_report,
)
from moa_graph.testing import StubServer


@pytest.fixture(scope="module")
def result():
    with StubServer(models=offline_eval_models(latency_scale=0)) as url:
        return evaluate(bundled_dataset(), config=offline_eval_config(url))


def test_the_markdown_has_a_row_per_arm_with_its_interval_and_record(result):
    text = markdown_report(result)
    guesser = result.arm("ref:stub:guesser")
    low, high = guesser.win_rate_ci
    row = next(line for line in text.splitlines() if line.startswith("| `ref:stub:guesser`"))
    assert f"{guesser.win_rate:.2f} [{low:.2f}, {high:.2f}]" in row
    assert "1 / 3 / 8" in row and "8%" in row
    baseline_row = next(line for line in text.splitlines() if line.startswith("| `aggregator`"))
    assert "baseline" in baseline_row and "67%" in baseline_row
    assert "12 prompts, 5 arms, scored by exact match" in text
    assert f"The run made {result.total_calls} model calls" in text


def test_write_report_writes_markdown_json_and_a_png(result, tmp_path):
    files = write_report(result, tmp_path / "out")
    assert files.markdown.read_text().startswith("# MoA evaluation: preset `eval-demo`")
    assert "![win rate vs cost per prompt](win_rate_vs_cost.png)" in files.markdown.read_text()
    assert files.plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    record = json.loads(files.json.read_text())
    arms = {arm["name"]: arm for arm in record["arms"]}
    assert arms["ref:stub:guesser"]["win_rate"] == result.arm("ref:stub:guesser").win_rate
    assert arms["ref:stub:guesser"]["win_rate_ci"] == list(
        result.arm("ref:stub:guesser").win_rate_ci
    )
    assert record["total_calls"] == result.total_calls
    assert len(record["answers"]) == 60 and record["items"][0]["prompt"] == "What is 17 * 23?"


def test_the_plot_puts_each_arm_at_its_cost_and_win_rate(result):
    figure = plot_win_rate_vs_cost(result)
    (axes,) = figure.axes
    assert axes.get_xlabel() == "cost per prompt (USD)"
    assert axes.get_xscale() == "log"  # the guesser is orders of magnitude cheaper
    labels = {text.get_text(): text.xy for text in axes.texts}
    guesser = result.arm("ref:stub:guesser")
    assert labels["ref:stub:guesser"] == (guesser.cost_per_prompt_usd, guesser.win_rate)
    assert set(labels) == {arm.name for arm in result.arms} - {"aggregator"}
    assert "baseline: aggregator" in axes.get_legend().get_texts()[0].get_text()


def test_without_prices_the_plot_uses_calls_per_prompt():
    behaviours = offline_eval_models(latency_scale=0)
    dataset = Dataset.of([{"prompt": "What is 2 + 3?", "reference": "5"}])
    with StubServer(models=behaviours) as url:
        config = offline_eval_config(url)
        preset = config.preset()
        unpriced = preset.model_copy(
            update={
                "aggregator": preset.aggregator.model_copy(
                    update={"output_cost_per_mtok": None, "input_cost_per_mtok": None}
                )
            }
        )
        result = evaluate(dataset, preset=unpriced, config=config, arms=["ref:stub:solver"])
    assert result.arm("aggregator").cost_per_prompt_usd is None
    assert result.total_cost_usd is None
    assert any("no price known for stub:aggregator" in note for note in result.notes)
    (axes,) = plot_win_rate_vs_cost(result).axes
    assert axes.get_xlabel().startswith("calls per prompt")
    assert "n/a" in markdown_report(result)

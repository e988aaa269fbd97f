"""The evaluation's statistics: win rate with ties counted half, the percentile bootstrap
interval (coverage, width, determinism) and the latency percentiles."""

import random

import numpy as np
import pytest

from moa_graph.evaluation.stats import bootstrap_ci, percentile, win_rate


def _outcomes(rng: random.Random, n: int, win: float, tie: float) -> list[float]:
    """n outcomes: a win with probability `win`, a tie with `tie`, else a loss."""
    return [1.0 if (u := rng.random()) < win else 0.5 if u < win + tie else 0.0 for _ in range(n)]


def test_ties_count_half_in_the_win_rate():
    assert win_rate([1.0, 0.0, 0.5, 0.5]) == 0.5
    assert win_rate([1.0, 1.0, 1.0, 0.5]) == 0.875


@pytest.mark.parametrize(("win", "tie"), [(0.6, 0.0), (0.3, 0.4), (0.1, 0.1)])
def test_the_95_percent_interval_covers_the_true_rate_about_95_times_in_100(win, tie):
    true_rate = win + tie / 2
    rng = random.Random(f"coverage:{win}:{tie}")
    repetitions, covered = 200, 0
    for repetition in range(repetitions):
        outcomes = _outcomes(rng, 60, win, tie)
        low, high = bootstrap_ci(outcomes, resamples=800, seed=repetition)
        covered += low <= true_rate <= high
    # Binomial(200, 0.95) stays within these bounds with probability > 0.999; the percentile
    # interval runs a little under nominal at n = 60, never far.
    assert 0.88 <= covered / repetitions <= 0.99


def test_the_interval_narrows_as_the_dataset_grows():
    rng = random.Random(7)
    small = bootstrap_ci(_outcomes(rng, 25, 0.5, 0.2), seed=1)
    large = bootstrap_ci(_outcomes(rng, 400, 0.5, 0.2), seed=1)
    # The width shrinks as 1/sqrt(n): 16 times the data, about a quarter of the width.
    assert (large[1] - large[0]) < 0.4 * (small[1] - small[0])


def test_the_interval_brackets_the_observed_rate():
    outcomes = _outcomes(random.Random(3), 50, 0.4, 0.3)
    low, high = bootstrap_ci(outcomes)
    assert low < win_rate(outcomes) < high


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    outcomes = _outcomes(random.Random(5), 40, 0.5, 0.2)
    assert bootstrap_ci(outcomes, seed=11) == bootstrap_ci(outcomes, seed=11)
    assert bootstrap_ci(outcomes, seed=11) != bootstrap_ci(outcomes, seed=12)


def test_an_arm_that_ties_every_prompt_has_a_zero_width_interval():
    assert bootstrap_ci([0.5] * 12) == (0.5, 0.5)


def test_a_wider_confidence_gives_a_wider_interval():
    outcomes = _outcomes(random.Random(9), 80, 0.5, 0.2)
    low80, high80 = bootstrap_ci(outcomes, confidence=0.8)
    low99, high99 = bootstrap_ci(outcomes, confidence=0.99)
    assert low99 < low80 and high80 < high99


def test_no_outcomes_have_no_rate_and_no_interval():
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        win_rate([])


def test_a_confidence_outside_0_1_or_no_resamples_is_refused():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.5], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([0.5], resamples=0)


def test_percentiles_agree_with_numpys_linear_method():
    rng = random.Random(13)
    for size in (1, 2, 7, 100):
        values = [rng.uniform(10, 900) for _ in range(size)]
        for q in (0, 50, 99, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_p99_of_a_hundred_latencies_sits_between_the_two_slowest():
    latencies = [float(ms) for ms in range(1, 101)]  # 1 ms .. 100 ms
    assert percentile(latencies, 50) == 50.5
    assert 99 < percentile(latencies, 99) < 100

"""The Yuen-Welch interval of 20%-trimmed geometric means, and the Student's t quantiles it uses."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from pytest_mooncake.results.schema import Rule, Statistic
from pytest_mooncake.serving.stats import Estimate, bootstrap, judge, yuen, yuen_intervals
from pytest_mooncake.serving.student_t import t_quantile, upper_tail


@pytest.mark.parametrize(("p", "df", "table"), [
    # Student's t table values (e.g. Abramowitz & Stegun, table 26.10), to six decimals.
    (0.975, 1, 12.706205), (0.975, 10, 2.228139), (0.995, 5, 4.032143), (0.9995, 3, 12.923979),
    (0.999, 200, 3.131480), (0.975, 1e5, 1.959988),
])
def test_t_quantiles_match_the_table(p: float, df: float, table: float) -> None:
    assert float(t_quantile(p, df)[0]) == pytest.approx(table, abs=2e-6)


def test_t_quantiles_are_vectorised_and_invert_the_tail() -> None:
    df = np.array([1.0, 1.7, 4.3, 23.0, 740.0])
    t = t_quantile(0.99913, df)
    assert t.shape == (5,) and np.all(np.diff(t) < 0)  # fewer degrees of freedom, heavier tails
    assert upper_tail(t, df) == pytest.approx(np.full(5, 1 - 0.99913), rel=1e-7)
    # The Cauchy (df = 1) and df = 2 tails in closed form, near the domain's edge and far out.
    for x in (1.8, 40.0, 3000.0):
        assert float(upper_tail(np.array([x]), np.array([1.0]))[0]) == pytest.approx(0.5 - math.atan(x) / math.pi, rel=1e-9)
        assert float(upper_tail(np.array([x]), np.array([2.0]))[0]) == pytest.approx(
            0.5 - x / (2 * math.sqrt(2 + x * x)), rel=1e-9)
    assert float(t_quantile(0.96, 1e5)[0]) == pytest.approx(NormalDist().inv_cdf(0.96), abs=1e-4)
    for bad in (0.95, 1.0, 0.2):
        with pytest.raises(ValueError, match=r"0.96 <= p < 1 \(a two-sided interval of 92% or more\), got"):
            t_quantile(bad, 3.0)


def test_the_interval_is_yuens_on_log_latencies() -> None:
    """Worked by hand: n = 10, g = 2 per side trimmed, h = 6 kept, winsorized variance, Welch's df."""
    a = [1.0, 1.1, 1.2, 0.9, 1.05, 0.95, 1.0, 3.0, 1.02, 0.98]
    b = [0.3, 0.33, 0.29, 0.31, 0.9, 0.3, 0.28, 0.32, 0.3, 0.31]
    parts = []
    for x in (a, b):
        logs = np.sort(np.log(x))
        winsorized = np.clip(logs, logs[2], logs[7])
        parts.append((logs[2:8].mean(), 9 * winsorized.var(ddof=1) / (6 * 5)))
    (mean_a, d_a), (mean_b, d_b) = parts
    df = (d_a + d_b) ** 2 / (d_a**2 / 5 + d_b**2 / 5)
    half = float(t_quantile(0.975, df)[0]) * math.sqrt(d_a + d_b)
    estimate = yuen(a, b)
    assert estimate == Estimate("reduction", "trimmed", pytest.approx(1 - math.exp(mean_b - mean_a)),
                                pytest.approx(1 - math.exp(mean_b - mean_a + half)),
                                pytest.approx(1 - math.exp(mean_b - mean_a - half)), 10, 10)
    # The stalls (3.0 cold, 0.9 hit) are trimmed: the estimate is the typical request's.
    assert estimate.value == pytest.approx(0.7, abs=0.01)
    change = yuen(a, b, effect="change")
    assert (change.value, change.ci_low, change.ci_high) == pytest.approx(
        (-estimate.value, -estimate.ci_high, -estimate.ci_low))
    speedup = yuen(a, b, effect="speedup")
    assert speedup.value == pytest.approx(1 / (1 - estimate.value) - 1)


def test_strata_weigh_each_kind_by_its_share() -> None:
    cold = [1.0, 1.1, 0.9, 1.0, 1.2, 1.05, 0.95, 1.0]
    fast, slow = [0.1, 0.12, 0.09, 0.11], [1.0, 0.9, 1.1, 1.05]
    stratified = yuen(cold, [fast, slow])
    geometric = [math.exp(np.sort(np.log(x))[g:len(x) - g].mean()) for x, g in ((cold, 1), (fast, 0), (slow, 0))]
    assert stratified.value == pytest.approx(1 - math.exp(0.5 * math.log(geometric[1]) + 0.5 * math.log(geometric[2]))
                                             / geometric[0])
    assert stratified.n_b == 8 and yuen(cold, [fast + slow, []]) == yuen(cold, fast + slow)
    # The interval: each stratum's squared error weighted by its share squared, Welch's df over the three.
    parts = []
    for x, g in ((cold, 1), (fast, 0), (slow, 0)):
        logs = np.sort(np.log(x))
        winsorized = np.clip(logs, logs[g], logs[len(x) - g - 1])
        kept = len(x) - 2 * g
        parts.append(((len(x) - 1) * winsorized.var(ddof=1) / (kept * (kept - 1)), kept))
    weighted = [parts[0][0], 0.25 * parts[1][0], 0.25 * parts[2][0]]
    df = sum(weighted) ** 2 / sum(w**2 / (kept - 1) for w, (_, kept) in zip(weighted, parts, strict=True))
    half = float(t_quantile(0.975, df)[0]) * math.sqrt(sum(weighted))
    log_ratio = math.log(1 - stratified.value)
    assert (stratified.ci_low, stratified.ci_high) == pytest.approx(
        (1 - math.exp(log_ratio + half), 1 - math.exp(log_ratio - half)))


def test_the_interval_covers_the_true_ratio_at_a_looks_size() -> None:
    """4,000 looks of 8 vs 8 lognormal TTFTs (sigma 0.4) with 3% of 3x stalls on both sides: the
    95% interval covers the true reduction of the typical request about 95% of the time."""
    rng = np.random.default_rng(7)
    def draw(median: float) -> np.ndarray:
        return median * np.exp(rng.normal(0, 0.4, (4000, 8))) * np.where(rng.random((4000, 8)) < 0.03, 3.0, 1.0)
    _, low, high = yuen_intervals(draw(1.0), [draw(0.3)], effect="reduction", level=0.95)
    coverage = float(np.mean((low <= 0.7) & (0.7 <= high)))
    assert 0.93 <= coverage <= 0.975


def test_degenerate_samples_give_an_open_or_a_zero_width_interval() -> None:
    assert yuen([1.0, 1.0, 1.0], [0.5, 0.5, 0.5]) == Estimate("reduction", "trimmed", 0.5, 0.5, 0.5, 3, 3)
    alone = yuen([2.0], [1.0])
    assert alone.value == pytest.approx(0.5) and (alone.ci_low, alone.ci_high) == (-math.inf, 1.0)
    assert judge("ttft_reduction", [2.0], [1.0], Rule(">=", 0.3)).outcome.value == "inconclusive"
    # Two values a side are enough for a finite interval (t with 1 degree of freedom).
    pair = yuen([1.0, 1.2], [0.5, 0.6])
    assert math.isfinite(pair.ci_low) and pair.ci_low < pair.value < pair.ci_high < 1
    # One value a side, several runs at once: each run its own estimate, every interval open.
    value, low, high = yuen_intervals(np.array([[2.0], [4.0]]), [np.array([[1.0], [1.0]])], effect="reduction", level=0.95)
    assert list(value) == [0.5, 0.75] and list(low) == [-math.inf] * 2 and list(high) == [1.0, 1.0]


def test_yuen_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match=r"^an effect needs values on both sides, got 0 and 2; were all requests of a "
                                         r"round errors\?$"):
        yuen([], [1.0, 2.0])
    for a, b in (([1.0, 0.0], [1.0, 2.0]), ([1.0, 2.0], [[1.0], [2.0, 0.0]])):
        with pytest.raises(ValueError, match=r"^a geometric mean needs every latency > 0$"):
            yuen(a, b)
    with pytest.raises(ValueError, match="effect must be one of"):
        yuen([1.0], [1.0], effect="ratio")


def test_judge_names_the_trimmed_statistic_by_default() -> None:
    verdict = judge("ttft_reduction", [1.0, 1.1, 0.9, 1.0], [0.2, 0.22, 0.18, 0.2], Rule(">=", 0.6), level=0.99)
    assert verdict.statistic is Statistic.TRIMMED and verdict.as_dict()["statistic"] == "trimmed"
    assert "(99% CI " in verdict.message and "20%-trimmed geometric mean of n=4 vs n=4" in verdict.message
    at_99 = yuen([1.0, 1.1, 0.9, 1.0], [0.2, 0.22, 0.18, 0.2], level=0.99)
    assert (verdict.effect, verdict.ci_low, verdict.ci_high) == (at_99.value, at_99.ci_low, at_99.ci_high)
    change = judge("tpot_change", [1.0, 1.1, 0.9, 1.0], [1.1, 1.2, 1.0, 1.1], Rule("within", 0.5), effect="change")
    assert change.effect > 0 and change.effect == pytest.approx(
        yuen([1.0, 1.1, 0.9, 1.0], [1.1, 1.2, 1.0, 1.1], effect="change").value)
    # The median and the mean keep the bootstrap, with the level, resamples and seed asked for.
    by_median = judge("ttft_reduction", [1.0, 1.1, 0.9, 1.0], [0.2, 0.3, 0.18, 0.2], Rule(">=", 0.6), statistic="median",
                      level=0.9, resamples=300, seed=5)
    boot = bootstrap([1.0, 1.1, 0.9, 1.0], [0.2, 0.3, 0.18, 0.2], level=0.9, resamples=300, seed=5)
    assert (by_median.ci_low, by_median.ci_high) == (boot.ci_low, boot.ci_high)

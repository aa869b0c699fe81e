"""Round statistics against numpy on fixed data, bootstrap coverage, strata, rules and verdicts."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pytest_mooncake.results.schema import Op, Outcome, Rule, Statistic, Verdict
from pytest_mooncake.serving import SLO, RequestError, RequestRecord, bootstrap, judge, round_stats
from pytest_mooncake.serving.stats import Estimate, run_duration


def record(i: int, ttft: float, e2e: float, tokens: int = 5, cached: int = 0, error: str | None = None) -> RequestRecord:
    itl = tuple([(e2e - ttft) / (tokens - 1)] * (tokens - 1)) if tokens > 1 else ()
    return RequestRecord(
        request_id=str(i), scenario="s", round="r", api="completions", run_start_epoch_s=0.0,
        run_start_monotonic_s=0.0, scheduled_at_s=float(i), sent_at_s=float(i), finished_at_s=i + e2e, ttft_s=ttft,
        itl_s=itl, tpot_s=(e2e - ttft) / (tokens - 1) if tokens > 1 else None, e2e_s=e2e, prompt_tokens=100,
        completion_tokens=tokens, cached_tokens=cached, content_chunks=tokens, text="x",
        error=RequestError(error, "planted") if error else None,
    )


def test_round_stats_match_numpy_on_fixed_data() -> None:
    ttfts = [0.1, 0.2, 0.3, 0.4, 1.0]
    records = [record(i, t, t + 0.4, cached=50) for i, t in enumerate(ttfts)]
    records.append(record(9, 0.01, 0.02, tokens=0, error="empty_completion"))
    s = round_stats(records, slo=SLO(ttft_ms=300, tpot_ms=150))
    ms = np.array(ttfts) * 1000
    assert s["ttft_ms"]["mean"] == pytest.approx(ms.mean()) and s["ttft_ms"]["median"] == pytest.approx(300)
    assert s["ttft_ms"]["p90"] == pytest.approx(np.percentile(ms, 90)) and s["ttft_ms"]["p99"] == pytest.approx(np.percentile(ms, 99))
    assert s["tpot_ms"]["median"] == pytest.approx(100) and s["e2e_ms"]["median"] == pytest.approx(700)
    assert s["errors_by_kind"] == {"empty_completion": 1} and (s["n"], s["errors"]) == (6, 1)
    # Rates divide by the span from the first scheduled send (0) to the last finish (9 + 0.02).
    assert s["requests_per_s"] == pytest.approx(5 / 9.02) and s["output_tokens_per_s"] == pytest.approx(25 / 9.02)
    assert s["goodput"] == pytest.approx(3 / 9.02)  # ttft <= 300 ms: three requests; all have tpot 100 ms
    assert s["hit_rate"] == pytest.approx(0.5) and s["cached_tokens"] == 250
    assert round_stats(records, wall_s=2.0)["requests_per_s"] == 2.5


def test_round_stats_of_nothing_but_errors() -> None:
    s = round_stats([record(0, 0.1, 0.2, error="http_error")])
    assert s["ttft_ms"] is None and s["hit_rate"] == 0.0 and s["errors_by_kind"] == {"http_error": 1}


def test_bootstrap_interval_covers_the_true_effect() -> None:
    # Lognormal latencies whose medians differ by a known factor: true reduction = 1 - 0.3 = 0.7.
    covered = 0
    for trial in range(40):
        rng = np.random.default_rng(100 + trial)
        cold = rng.lognormal(np.log(1.0), 0.3, 30)
        hit = rng.lognormal(np.log(0.3), 0.3, 30)
        estimate = bootstrap(cold, hit, seed=trial, resamples=2000)
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
        covered += estimate.ci_low <= 0.7 <= estimate.ci_high
    assert covered >= 34  # nominal 95% of 40 = 38; allow for the percentile method's small-sample bias


def test_bootstrap_effects_and_seed() -> None:
    a, b = [1.0, 1.2, 0.9, 1.1, 1.0], [0.5, 0.4, 0.6, 0.5, 0.45]
    assert bootstrap(a, b, seed=1) == bootstrap(a, b, seed=1)
    assert bootstrap(a, b, statistic="mean").value == pytest.approx(1 - np.mean(b) / np.mean(a))
    assert bootstrap(a, b, effect="change").value == pytest.approx(np.median(b) / np.median(a) - 1)
    assert bootstrap(a, b, effect="speedup", statistic="mean").value == pytest.approx(np.mean(a) / np.mean(b) - 1)


def test_strata_keep_the_designed_mix() -> None:
    rng = np.random.default_rng(3)
    cold = list(rng.normal(1.0, 0.05, 10))
    fast, slow = list(rng.normal(0.1, 0.01, 5)), list(rng.normal(1.0, 0.05, 5))
    pooled = bootstrap(cold, fast + slow, statistic="mean")
    strata = bootstrap(cold, [fast, slow], statistic="mean")
    assert strata.value == pytest.approx(pooled.value) and strata.n_b == 10
    assert strata.ci_high - strata.ci_low < (pooled.ci_high - pooled.ci_low) / 2


def test_a_median_over_strata_weights_each_kind_of_request_by_its_share() -> None:
    """A half-hit, half-cold round: the pooled median falls in the gap between the two kinds and
    swings with every resample; the stratified one is each kind's median in the designed mix."""
    cold = [1.0, 1.1, 0.9, 1.0, 3.0, 1.05, 0.95, 1.0]
    fast, slow = [0.1, 0.12, 0.09, 0.6], [1.0, 0.9, 1.1, 2.5]
    estimate = bootstrap(cold, [fast, slow])
    assert estimate.value == pytest.approx(1 - (0.5 * np.median(fast) + 0.5 * np.median(slow)) / np.median(cold))
    assert (estimate.ci_low, estimate.ci_high) == _reference_interval(cold, [fast, slow], np.median, lambda x, y: 1 - y / x)
    uneven = bootstrap(cold, [fast[:1], slow])
    assert uneven.value == pytest.approx(1 - (0.2 * fast[0] + 0.8 * np.median(slow)) / np.median(cold))
    # The verdict says which median it judged; an empty stratum is no stratum.
    assert judge("ttft_reduction", cold, [fast, slow], Rule(">=", 0.1), statistic="median").judged_statistic == \
        "stratum-weighted median"
    assert judge("ttft_reduction", cold, [fast + slow, []], Rule(">=", 0.1)).strata == 1
    assert judge("ttft_reduction", cold, fast + slow, Rule(">=", 0.1), statistic="median").judged_statistic == "median"
    assert judge("ttft_reduction", cold, [fast, slow], Rule(">=", 0.1)).judged_statistic == \
        "stratum-weighted 20%-trimmed geometric mean"


def test_bootstrap_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="all requests of a round errors"):
        bootstrap([1.0], [])
    with pytest.raises(ValueError, match="effect must be one of"):
        bootstrap([1.0], [1.0], effect="ratio")


@pytest.mark.parametrize(
    ("op", "low", "high", "outcome"),
    [(">=", 0.65, 0.8, Outcome.PASSED), (">=", 0.3, 0.55, Outcome.FAILED), (">=", 0.5, 0.7, Outcome.INCONCLUSIVE),
     ("<=", -0.05, 0.08, Outcome.PASSED), ("<=", 0.12, 0.3, Outcome.FAILED), ("<=", 0.05, 0.2, Outcome.INCONCLUSIVE)],
)
def test_outcome_from_the_interval(op: str, low: float, high: float, outcome: str) -> None:
    assert Rule(op, 0.6 if op == ">=" else 0.1).outcome(low, high) == outcome


@pytest.mark.parametrize(("low", "high", "outcome"), [(-0.05, 0.08, Outcome.PASSED), (0.15, 0.3, Outcome.FAILED), (-0.3, -0.2, Outcome.FAILED), (-0.05, 0.2, Outcome.INCONCLUSIVE)])
def test_within_band(low: float, high: float, outcome: str) -> None:
    assert Rule("within", 0.1).outcome(low, high) == outcome and str(Rule("within", 0.1)) == "within ±10%"


def test_rule_refuses_an_unknown_operator() -> None:
    with pytest.raises(ValueError, match="threshold operator '==': use one of '>=', '<=', 'within', '>'"):
        Rule("==", 0.5)
    assert Rule(">=", 0.6) == Rule(Op.AT_LEAST, 0.6) and Rule(">=", 0.6).op is Op.AT_LEAST


@pytest.mark.parametrize(("hit_level", "outcome"), [(0.2, Outcome.PASSED), (0.9, Outcome.FAILED), (0.42, Outcome.INCONCLUSIVE)])
def test_three_outcomes_with_their_words(hit_level: float, outcome: str) -> None:
    rng = np.random.default_rng(2)
    cold = list(rng.normal(1.0, 0.15, 8))
    hit = list(rng.normal(hit_level, 0.15 * hit_level, 8))
    verdict = judge("ttft_reduction", cold, hit, Rule(">=", 0.6))
    assert verdict.outcome == outcome, verdict.message
    assert "20%-trimmed geometric mean of n=8 vs n=8" in verdict.message and "the threshold >= 60%" in verdict.message
    word = {Outcome.PASSED: "meets", Outcome.FAILED: "misses", Outcome.INCONCLUSIVE: "is INCONCLUSIVE against"}[outcome]
    assert word in verdict.message
    if outcome == Outcome.INCONCLUSIVE:
        assert verdict.ci_low < 0.6 < verdict.ci_high and "straddles" in verdict.message
    assert (verdict.as_dict()["op"], verdict.as_dict()["threshold"], verdict.as_dict()["statistic"]) == (">=", 0.6, "trimmed")


def _reference_interval(a: list[float], strata: list[list[float]], stat: Callable[..., Any], effect: Callable[..., Any],
                        resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """The seeded 95% percentile bootstrap written out from its definition: the side ``a`` is drawn first,
    then each stratum; every resample is summarised by the same statistic as the point estimate, the
    strata's statistics weighted by their shares."""
    rng = np.random.default_rng(seed)
    boot_a = stat(rng.choice(np.asarray(a), size=(resamples, len(a))), axis=1)
    n_b = sum(len(s) for s in strata)
    draws = [rng.choice(np.asarray(s), size=(resamples, len(s))) for s in strata]
    boot_b = sum(len(s) / n_b * stat(d, axis=1) for s, d in zip(strata, draws))
    low, high = np.percentile(effect(boot_a, boot_b), [2.5, 97.5])
    return float(low), float(high)


def test_interval_is_the_percentile_bootstrap_of_the_point_statistic() -> None:
    rng = np.random.default_rng(7)
    a, b = list(rng.lognormal(0.0, 0.3, 20)), list(rng.lognormal(np.log(0.4), 0.3, 15))
    estimate = bootstrap(a, b)
    assert estimate == Estimate("reduction", "median", 1 - float(np.median(b) / np.median(a)),
                                *_reference_interval(a, [b], np.median, lambda x, y: 1 - y / x), 20, 15)
    assert bootstrap(a, b) == bootstrap(a, b, resamples=4000, seed=0) != bootstrap(a, b, seed=1)
    by_mean = bootstrap(a, [b[:5], b[5:]], effect="speedup", statistic="mean", resamples=500, seed=3)
    assert (by_mean.effect, by_mean.statistic) == ("speedup", "mean")
    assert (by_mean.ci_low, by_mean.ci_high) == _reference_interval(a, [b[:5], b[5:]], np.mean, lambda x, y: x / y - 1, 500, 3)


@pytest.mark.parametrize("seed", range(5))
def test_interval_contains_the_estimate_on_heavy_tailed_samples(seed: int) -> None:
    """Tight cold latencies against heavy-tailed hits: the medians and the means tell different stories,
    and the interval must be the one of the statistic the estimate uses."""
    rng = np.random.default_rng(seed)
    cold, hit = rng.lognormal(0.0, 0.2, 40), rng.lognormal(np.log(0.3), 1.5, 40)
    estimate = bootstrap(cold, hit)
    assert estimate.ci_low <= estimate.value <= estimate.ci_high, estimate


def test_inputs_are_computed_in_double_precision() -> None:
    a32 = [np.float32(x) for x in (1.1, 0.9, 1.3, 1.05, 0.97)]
    b32 = [np.float32(x) for x in (0.31, 0.47, 0.29, 0.33)]
    a64, b64 = [float(x) for x in a32], [float(x) for x in b32]
    assert bootstrap(np.asarray(a32), np.asarray(b32), statistic="mean") == bootstrap(a64, b64, statistic="mean")
    assert bootstrap(a32, [b32[:2], b32[2:]], statistic="mean") == bootstrap(a64, [b64[:2], b64[2:]], statistic="mean")
    records = [record(i, t, t + 0.4) for i, t in enumerate(a64)]
    as32 = [dataclasses.replace(r, ttft_s=np.float32(r.ttft_s)) for r in records]
    assert round_stats(as32)["ttft_ms"] == round_stats(records)["ttft_ms"]


def test_a_single_value_per_side_is_enough() -> None:
    assert bootstrap([2.0], [1.0]) == Estimate("reduction", "median", 0.5, 0.5, 0.5, 1, 1)


def test_bootstrap_refuses_empty_or_non_positive_sides_with_the_reason() -> None:
    with pytest.raises(ValueError) as empty:
        bootstrap([1.0], [])
    assert str(empty.value) == "an effect needs values on both sides, got 1 and 0; were all requests of a round errors?"
    with pytest.raises(ValueError) as zero_a:
        bootstrap([0.0], [2.0])
    assert str(zero_a.value) == "the medians are 0 and 2; a relative effect needs both > 0"
    with pytest.raises(ValueError) as zero_b:
        bootstrap([3.0], [0.0], statistic="mean")
    assert str(zero_b.value) == "the means are 3 and 0; a relative effect needs both > 0"


def test_resamples_with_a_zero_statistic_raise_no_warning() -> None:
    """Resampled medians of 0 (division by zero, 0/0) are dropped from the percentiles without noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate = bootstrap([0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5, 0.5], resamples=400)
    assert estimate.value == 0.5


def test_run_duration_spans_first_send_to_last_finish() -> None:
    records = [record(i, 0.1, 0.5) for i in (10, 11, 12)]
    assert run_duration(records) == pytest.approx(12.5 - 10) and run_duration([]) == 0.0


def test_rates_of_a_round_without_duration_are_zero() -> None:
    records = [record(0, 0.1, 0.5)]
    assert round_stats(records, wall_s=0.0)["requests_per_s"] == 0.0 and round_stats([])["requests_per_s"] == 0.0
    assert round_stats(records, wall_s=0.5)["requests_per_s"] == 2.0


def test_missing_token_counts_count_as_zero() -> None:
    unknown = dataclasses.replace(record(0, 0.1, 0.5), prompt_tokens=None, completion_tokens=None, cached_tokens=None)
    s = round_stats([unknown, record(1, 0.1, 0.5, cached=40)])
    assert (s["prompt_tokens"], s["completion_tokens"], s["cached_tokens"]) == (100, 5, 40)
    assert s["itl_ms"] == {"mean": pytest.approx(100), "median": pytest.approx(100), "p90": pytest.approx(100),
                           "p99": pytest.approx(100)}


@pytest.mark.parametrize(
    ("op", "low", "high", "outcome"),
    [
        # an interval bound exactly on the threshold is on the passing side
        (">=", 0.6, 0.8, Outcome.PASSED), ("<=", -0.3, 0.1, Outcome.PASSED), ("within", -0.1, 0.1, Outcome.PASSED),
        # and it is not yet on the failing side
        (">=", 0.4, 0.6, Outcome.INCONCLUSIVE), ("<=", 0.1, 0.3, Outcome.INCONCLUSIVE),
        ("within", -0.3, -0.1, Outcome.INCONCLUSIVE), ("within", 0.1, 0.3, Outcome.INCONCLUSIVE),
        # one side below the band is not a failure of the whole band
        ("within", -0.3, 0.05, Outcome.INCONCLUSIVE),
    ],
)
def test_bounds_exactly_on_the_threshold(op: str, low: float, high: float, outcome: str) -> None:
    value = 0.6 if op == ">=" else 0.1
    assert Rule(op, value).outcome(low, high) == outcome


def test_verdict_carries_the_effect_the_statistic_and_the_exact_message() -> None:
    before, after = [1.0, 1.1, 0.9, 1.05, 0.95], [0.5, 0.55, 0.45, 0.5]
    verdict = judge("tpot_change", before, after, Rule("<=", 0.1), effect="change", statistic="mean")
    e = bootstrap(before, after, effect="change", statistic="mean")
    assert verdict == Verdict("tpot_change", Statistic.MEAN, e.value, e.ci_low, e.ci_high, 5, 4, Rule("<=", 0.1), Outcome.PASSED)
    assert verdict.message == (f"tpot_change = {e.value:.1%} (95% CI {e.ci_low:.1%} .. {e.ci_high:.1%}, mean of n=4 vs n=5) "
                               "meets the threshold <= 10%")
    straddling = judge("ttft_reduction", before, after, Rule(">=", 0.5), context=" (scenario x)")
    assert straddling.outcome == Outcome.INCONCLUSIVE and straddling.message.endswith(
        "is INCONCLUSIVE against the threshold >= 50% (scenario x); the interval straddles the threshold: "
        "more requests per round narrow it")

"""Aggregates against numpy on fixed data, bootstrap coverage, thresholds and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_mooncake.serving import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    SLO,
    RequestError,
    RequestRecord,
    Threshold,
    bootstrap_effect,
    judge,
    judge_reduction,
    negative_control,
    summarize,
)


def record(i: int, ttft: float, e2e: float, tokens: int = 5, cached: int = 0, error: str | None = None) -> RequestRecord:
    itl = tuple([(e2e - ttft) / (tokens - 1)] * (tokens - 1)) if tokens > 1 else ()
    return RequestRecord(
        request_id=str(i), scenario="s", round="r", api="completions", run_start_epoch_s=0.0,
        run_start_monotonic_s=0.0, scheduled_at_s=float(i), sent_at_s=float(i), finished_at_s=i + e2e, ttft_s=ttft,
        itl_s=itl, tpot_s=(e2e - ttft) / (tokens - 1) if tokens > 1 else None, e2e_s=e2e, prompt_tokens=100,
        completion_tokens=tokens, cached_tokens=cached, content_chunks=tokens, text="x",
        error=RequestError(error, "planted") if error else None,
    )


def test_summary_matches_numpy_on_fixed_data() -> None:
    ttfts = [0.1, 0.2, 0.3, 0.4, 1.0]
    records = [record(i, t, t + 0.4, cached=50) for i, t in enumerate(ttfts)]
    records.append(record(9, 0.01, 0.02, tokens=0, error="empty_completion"))
    s = summarize(records, slo=SLO(ttft_ms=300, tpot_ms=150))
    ms = np.array(ttfts) * 1000
    assert s.ttft.n == 5 and s.ttft.mean_ms == pytest.approx(ms.mean()) and s.ttft.median_ms == pytest.approx(300)
    assert s.ttft.p90_ms == pytest.approx(np.percentile(ms, 90)) and s.ttft.p99_ms == pytest.approx(np.percentile(ms, 99))
    assert s.tpot.median_ms == pytest.approx(100) and s.itl.n == 20 and s.e2e.median_ms == pytest.approx(700)
    assert s.errors_by_kind == {"empty_completion": 1} and (s.requests, s.succeeded) == (6, 5)
    assert s.duration_s == pytest.approx(9.02)  # first scheduled (0) to last finish (9 + 0.02)
    assert s.request_throughput == pytest.approx(5 / 9.02) and s.output_throughput == pytest.approx(25 / 9.02)
    assert s.goodput == pytest.approx(3 / 9.02)  # ttft <= 300 ms: three requests; all have tpot 100 ms
    assert s.cache_hit_rate == pytest.approx(0.5) and s.cached_tokens == 250


def test_summary_of_nothing_but_errors() -> None:
    s = summarize([record(0, 0.1, 0.2, error="http_error")])
    assert s.ttft is None and s.cache_hit_rate is None and s.errors_by_kind == {"http_error": 1}


def test_bootstrap_interval_covers_the_true_effect() -> None:
    # Lognormal latencies whose medians differ by a known factor: true reduction = 1 - 0.3 = 0.7.
    covered = 0
    for trial in range(40):
        rng = np.random.default_rng(100 + trial)
        cold = rng.lognormal(np.log(1.0), 0.3, 30)
        hit = rng.lognormal(np.log(0.3), 0.3, 30)
        estimate = bootstrap_effect(cold, hit, seed=trial, resamples=2000)
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
        covered += estimate.ci_low <= 0.7 <= estimate.ci_high
    assert covered >= 34  # nominal 95% of 40 = 38; allow for the percentile method's small-sample bias


def test_bootstrap_is_seeded_and_has_a_mean_variant() -> None:
    a, b = [1.0, 1.2, 0.9, 1.1, 1.0], [0.5, 0.4, 0.6, 0.5, 0.45]
    assert bootstrap_effect(a, b, seed=1) == bootstrap_effect(a, b, seed=1)
    mean = bootstrap_effect(a, b, statistic="mean")
    assert mean.value == pytest.approx(1 - np.mean(b) / np.mean(a)) and mean.statistic == "mean"
    change = bootstrap_effect(a, b, effect="change")
    assert change.value == pytest.approx(np.median(b) / np.median(a) - 1)


def test_bootstrap_refuses_empty_samples_with_a_reason() -> None:
    with pytest.raises(ValueError, match="all requests of a round errors"):
        bootstrap_effect([1.0], [])


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [("ttft_reduction >= 0.60", ">=", 0.6), ("ttft_reduction>=60%", ">=", 0.6), ("x <= 0.1", "<=", 0.1),
     ("tpot_change within ±0.10", "within", 0.1), ("tpot_change within +-10%", "within", 0.1)],
)
def test_threshold_forms(text: str, op: str, value: float) -> None:
    threshold = Threshold.parse(text)
    assert (threshold.op, threshold.value) == (op, pytest.approx(value))


def test_threshold_rejects_gibberish_with_the_valid_forms() -> None:
    with pytest.raises(ValueError, match="METRIC within ±X"):
        Threshold.parse("ttft faster please")


@pytest.mark.parametrize(
    ("threshold", "low", "high", "outcome"),
    [(">= 0.6", 0.65, 0.8, PASSED), (">= 0.6", 0.3, 0.55, FAILED), (">= 0.6", 0.5, 0.7, INCONCLUSIVE),
     ("<= 0.1", -0.05, 0.08, PASSED), ("<= 0.1", 0.12, 0.3, FAILED), ("<= 0.1", 0.05, 0.2, INCONCLUSIVE),
     ("within ±0.1", -0.05, 0.08, PASSED), ("within ±0.1", 0.15, 0.3, FAILED), ("within ±0.1", -0.3, -0.2, FAILED),
     ("within ±0.1", -0.05, 0.2, INCONCLUSIVE)],
)
def test_outcome_from_the_interval(threshold: str, low: float, high: float, outcome: str) -> None:
    assert Threshold.parse("m " + threshold).outcome(low, high) == outcome


def test_verdicts_on_synthetic_rounds() -> None:
    rng = np.random.default_rng(0)
    cold = rng.normal(1.0, 0.05, 40)
    passed = judge_reduction(cold, rng.normal(0.2, 0.02, 40), "ttft_reduction >= 0.60", hit_cached_tokens=900)
    assert passed.outcome == PASSED and passed.passed and not passed.suspicious
    assert "PASSED" in passed.message and "n=40" in passed.message and "threshold ttft_reduction >= 0.6" in passed.message
    failed = judge_reduction(cold, rng.normal(0.8, 0.02, 40), "ttft_reduction >= 0.60")
    assert failed.outcome == FAILED and not failed.passed
    noisy = judge_reduction(rng.lognormal(0, 0.8, 6), rng.lognormal(np.log(0.4), 0.8, 6), "ttft_reduction >= 0.60")
    assert noisy.outcome == INCONCLUSIVE and "straddles" in noisy.message
    tpot = judge("tpot_change within ±0.10", bootstrap_effect(cold, rng.normal(1.02, 0.05, 40), effect="change"))
    assert tpot.outcome == PASSED


def test_gain_without_cached_tokens_is_suspicious() -> None:
    verdict = judge_reduction([1.0, 1.1, 0.9, 1.0], [0.1, 0.12, 0.09, 0.1], "ttft_reduction >= 0.6", hit_cached_tokens=0)
    assert verdict.outcome == PASSED and verdict.suspicious and not verdict.passed
    assert "SUSPICIOUS" in verdict.message


def test_negative_control() -> None:
    rng = np.random.default_rng(5)
    cold = rng.normal(1.0, 0.03, 30)
    assert negative_control(cold, rng.normal(1.0, 0.03, 30)).outcome == PASSED
    contaminated = negative_control(cold, rng.normal(0.5, 0.03, 30))
    assert contaminated.outcome == FAILED and "CONTAMINATED" in contaminated.message

"""Round statistics against numpy on fixed data, bootstrap coverage, strata, rules and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_mooncake.serving import FAILED, INCONCLUSIVE, PASSED, SLO, RequestError, RequestRecord, Rule, bootstrap, judge, round_stats


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


def test_bootstrap_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="all requests of a round errors"):
        bootstrap([1.0], [])
    with pytest.raises(ValueError, match="effect must be one of"):
        bootstrap([1.0], [1.0], effect="ratio")


@pytest.mark.parametrize(
    ("op", "low", "high", "outcome"),
    [(">=", 0.65, 0.8, PASSED), (">=", 0.3, 0.55, FAILED), (">=", 0.5, 0.7, INCONCLUSIVE),
     ("<=", -0.05, 0.08, PASSED), ("<=", 0.12, 0.3, FAILED), ("<=", 0.05, 0.2, INCONCLUSIVE)],
)
def test_outcome_from_the_interval(op: str, low: float, high: float, outcome: str) -> None:
    assert Rule(op, 0.6 if op == ">=" else 0.1).outcome(low, high) == outcome


@pytest.mark.parametrize(("low", "high", "outcome"), [(-0.05, 0.08, PASSED), (0.15, 0.3, FAILED), (-0.3, -0.2, FAILED), (-0.05, 0.2, INCONCLUSIVE)])
def test_within_band(low: float, high: float, outcome: str) -> None:
    assert Rule("within", 0.1).outcome(low, high) == outcome and str(Rule("within", 0.1)) == "within ±10%"


def test_rule_refuses_an_unknown_operator() -> None:
    with pytest.raises(ValueError, match="use '>=', '<=' or 'within'"):
        Rule(">", 0.5)


@pytest.mark.parametrize(("hit_level", "outcome"), [(0.2, PASSED), (0.9, FAILED), (0.42, INCONCLUSIVE)])
def test_three_outcomes_with_their_words(hit_level: float, outcome: str) -> None:
    rng = np.random.default_rng(2)
    cold = list(rng.normal(1.0, 0.15, 8))
    hit = list(rng.normal(hit_level, 0.15 * hit_level, 8))
    verdict = judge("ttft_reduction", cold, hit, Rule(">=", 0.6))
    assert verdict.outcome == outcome, verdict.message
    assert "median of n=8 vs n=8" in verdict.message and "the threshold >= 60%" in verdict.message
    word = {PASSED: "meets", FAILED: "misses", INCONCLUSIVE: "is INCONCLUSIVE against"}[outcome]
    assert word in verdict.message
    if outcome == INCONCLUSIVE:
        assert verdict.ci_low < 0.6 < verdict.ci_high and "straddles" in verdict.message
    assert verdict.as_dict()["threshold"] == ">= 0.6"

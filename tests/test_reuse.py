"""Verdicts: bootstrap intervals, the three outcomes, strata, and the checks on reuse claims."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_mooncake.measure import Record
from pytest_mooncake.protocol import RoundResult, ScenarioRun
from pytest_mooncake.reuse import evaluate
from pytest_mooncake.scenarios import Scenario
from pytest_mooncake.verdict import FAILED, INCONCLUSIVE, PASSED, judge_at_least, reduction_ci, round_stats
from pytest_mooncake.vllm.server import Endpoint


def test_interval_contains_the_true_effect() -> None:
    rng = np.random.default_rng(1)
    cold = list(rng.normal(1.0, 0.05, 40))
    hit = list(rng.normal(0.3, 0.02, 40))
    effect, low, high = reduction_ci(cold, hit)
    assert low < 0.7 < high
    assert effect == pytest.approx(1 - np.median(hit) / np.median(cold))


@pytest.mark.parametrize(
    ("hit_level", "outcome"), [(0.2, PASSED), (0.9, FAILED), (0.42, INCONCLUSIVE)]
)
def test_three_outcomes(hit_level: float, outcome: str) -> None:
    rng = np.random.default_rng(2)
    cold = list(rng.normal(1.0, 0.15, 8))
    hit = list(rng.normal(hit_level, 0.15 * hit_level, 8))
    verdict = judge_at_least("ttft_reduction", cold, hit, 0.6)
    assert verdict.outcome == outcome, verdict.message
    if outcome == INCONCLUSIVE:
        assert verdict.ci_low < 0.6 < verdict.ci_high and "INCONCLUSIVE" in verdict.message


def test_strata_keep_the_designed_mix() -> None:
    rng = np.random.default_rng(3)
    cold = list(rng.normal(1.0, 0.05, 10))
    fast, slow = list(rng.normal(0.1, 0.01, 5)), list(rng.normal(1.0, 0.05, 5))
    _, low_pooled, high_pooled = reduction_ci(cold, fast + slow, statistic="mean")
    _, low, high = reduction_ci(cold, [fast, slow], statistic="mean")
    assert high - low < (high_pooled - low_pooled) / 2


def _record(i: int, round_name: str, ttft: float, cached: int, text: str = "same") -> Record:
    return Record(f"r{i}", round_name, ttft, ttft + 0.05, (0.01,), prompt_tokens=1000, completion_tokens=4, cached_tokens=cached, text=text)


def _run(hit_ttft: float, hit_cached: int, repeat_text: str = "same") -> ScenarioRun:
    cold = RoundResult("cold", [_record(i, "cold", 1.0 + 0.01 * i, 0) for i in range(8)], 8.0)
    hit = RoundResult("hit", [_record(i, "hit", hit_ttft + 0.001 * i, hit_cached) for i in range(8)], 1.0)
    endpoint = Endpoint("http://127.0.0.1:1/v1", "m", spawned=False, label="test")
    return ScenarioRun(Scenario("high_reuse", 8, 900, 100, reuse=1.0), endpoint, [cold, hit], True, True, ("same", repeat_text))


def test_a_real_cache_win_passes() -> None:
    assert evaluate(_run(0.1, 896), {"ttft_reduction": 0.6}).problems == []


def test_reduction_without_cached_tokens_is_suspicious() -> None:
    """The warm-up trap: something made hits faster, but nothing came from a cache."""
    problems = evaluate(_run(0.1, 0), {"ttft_reduction": 0.6}).problems
    assert any(p.startswith("SUSPICIOUS") for p in problems)


def test_integrity_mismatch_fails_with_a_diff() -> None:
    problems = evaluate(_run(0.1, 896, repeat_text="different"), {"ttft_reduction": 0.6}).problems
    assert any("output integrity" in p and "+different" in p for p in problems)


def test_negative_control_flags_contamination() -> None:
    clean = evaluate(_run(1.0, 0), {"control_gain": 0.1})
    assert clean.problems == [] and clean.verdicts[0].outcome == PASSED
    dirty = evaluate(_run(0.5, 0), {"control_gain": 0.1})
    assert any("CONTAMINATED" in p for p in dirty.problems)


def test_failed_requests_are_reported_not_measured() -> None:
    run = _run(0.1, 896)
    run.rounds[1].records[0] = Record("r0", "hit", None, None, error="APIStatusError: HTTP 500: boom")
    problems = evaluate(run, {"ttft_reduction": 0.6}).problems
    assert problems == ["1 requests failed, e.g. r0: APIStatusError: HTTP 500: boom"]


def test_round_stats() -> None:
    stats = round_stats([_record(0, "hit", 0.1, 500), _record(1, "hit", 0.3, 500)], wall_s=2.0)
    assert stats["ttft_ms"]["median"] == pytest.approx(200.0)
    assert stats["hit_rate"] == 0.5 and stats["requests_per_s"] == 1.0 and stats["errors"] == 0


def test_slo_and_goodput() -> None:
    evaluation = evaluate(_run(0.1, 896), {"ttft_reduction": 0.6, "ttft_p90_ms": 50})
    assert any("TTFT p90 1" in p and "> SLO 50 ms" in p for p in evaluation.problems)
    assert evaluate(_run(0.1, 896), {"ttft_p90_ms": 500}).problems == []

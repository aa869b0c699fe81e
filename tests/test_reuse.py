"""What a scenario concludes: verdicts on every threshold, proof of reuse, output integrity."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake.protocol import RoundResult, ScenarioRun
from pytest_mooncake.reuse import evaluate
from pytest_mooncake.scenarios import Scenario
from pytest_mooncake.serving import FAILED, PASSED, RequestError, RequestRecord
from pytest_mooncake.vllm.server import Endpoint


def _record(i: int, round_name: str, ttft: float, cached: int, tpot: float = 0.01) -> RequestRecord:
    e2e = ttft + 3 * tpot
    return RequestRecord(
        request_id=f"r{i}", scenario="high_reuse", round=round_name, api="completions", run_start_epoch_s=0.0,
        run_start_monotonic_s=0.0, scheduled_at_s=0.0, sent_at_s=0.0, finished_at_s=e2e, ttft_s=ttft,
        itl_s=(tpot,) * 3, tpot_s=tpot, e2e_s=e2e, prompt_tokens=1000, completion_tokens=4, cached_tokens=cached,
        content_chunks=4, text="same", error=None,
    )


def _run(hit_ttft: float, hit_cached: int, repeat_text: str = "same", hit_tpot: float = 0.01) -> ScenarioRun:
    cold = RoundResult("cold", [_record(i, "cold", 1.0 + 0.01 * i, 0) for i in range(8)], 8.0)
    hit = RoundResult("hit", [_record(i, "hit", hit_ttft + 0.001 * i, hit_cached, hit_tpot) for i in range(8)], 1.0)
    endpoint = Endpoint("http://127.0.0.1:1/v1", "m", spawned=False, label="test")
    return ScenarioRun(Scenario("high_reuse", 8, 900, 100, reuse=1.0), endpoint, [cold, hit], True, True, ("same", repeat_text))


def test_a_real_cache_win_passes() -> None:
    evaluation = evaluate(_run(0.1, 896), {"ttft_reduction": 0.6})
    assert evaluation.problems == [] and [v.outcome for v in evaluation.verdicts] == [PASSED]


def test_a_small_gain_fails_with_the_numbers() -> None:
    [problem] = evaluate(_run(0.8, 896), {"ttft_reduction": 0.6}).problems
    assert problem.startswith("ttft_reduction = ") and "misses the threshold >= 60%" in problem


def test_reduction_without_cached_tokens_is_suspicious() -> None:
    """The warm-up trap: something made hits faster, but nothing came from a cache."""
    problems = evaluate(_run(0.1, 0), {"ttft_reduction": 0.6}).problems
    assert any(p.startswith("SUSPICIOUS") for p in problems)


def test_partial_hits_are_reported_as_partial() -> None:
    notes = evaluate(_run(0.1, 300), {"ttft_reduction": 0.6}).notes
    assert any(n.startswith("PARTIAL HITS: only 30.0%") for n in notes)


def test_integrity_mismatch_fails_with_a_diff() -> None:
    problems = evaluate(_run(0.1, 896, repeat_text="different"), {"ttft_reduction": 0.6}).problems
    assert any("output integrity" in p and "+different" in p for p in problems)


def test_match_tokens_compares_only_the_leading_tokens() -> None:
    run = dataclasses.replace(_run(0.1, 896), integrity=("a b c d", "a b x y"))
    assert evaluate(run, {"match_tokens": 2}, tokenizer=str.split).problems == []
    [problem] = evaluate(run, {"match_tokens": 3}, tokenizer=str.split).problems
    assert "the first 3 tokens of the answers differ" in problem


def test_throughput_gain_and_tpot_change_are_judged() -> None:
    evaluation = evaluate(_run(0.1, 896), {"throughput_gain": 1.5, "tpot_change": 0.1})
    assert [(v.metric, v.outcome) for v in evaluation.verdicts] == [("throughput_gain", PASSED), ("tpot_change", PASSED)]
    slower = evaluate(_run(0.1, 896, hit_tpot=0.02), {"tpot_change": 0.1})
    assert slower.verdicts[0].outcome == FAILED and "tpot_change = 100.0%" in slower.problems[0]


def test_negative_control_flags_contamination() -> None:
    clean = evaluate(_run(1.0, 0), {"control_gain": 0.1})
    assert clean.problems == [] and clean.verdicts[0].outcome == PASSED
    dirty = evaluate(_run(0.5, 0), {"control_gain": 0.1})
    assert dirty.verdicts[0].outcome == FAILED and any("CONTAMINATED" in p for p in dirty.problems)
    cached = evaluate(_run(1.0, 10), {"control_gain": 0.1})
    assert any("CONTAMINATED" in p for p in cached.problems)


def test_failed_requests_are_reported_not_measured() -> None:
    run = _run(0.1, 896)
    run.rounds[1].records[0] = dataclasses.replace(
        run.rounds[1].records[0], ttft_s=None, error=RequestError("http_error", "boom [completions request 'r0']", 500)
    )
    problems = evaluate(run, {"ttft_reduction": 0.6}).problems
    assert problems == ["1 requests failed, e.g. http_error (HTTP 500): boom [completions request 'r0']"]


def test_slo_and_goodput() -> None:
    evaluation = evaluate(_run(0.1, 896), {"ttft_reduction": 0.6, "ttft_p90_ms": 50})
    assert any("TTFT p90 1" in p and "> SLO 50 ms" in p for p in evaluation.problems)
    assert any("goodput 0.00 requests/s" in n for n in evaluation.notes)
    assert evaluate(_run(0.1, 896), {"ttft_p90_ms": 500}).problems == []


@pytest.mark.parametrize("key", ["ttft_reduction", "throughput_gain", "tpot_change", "ttft_p90_ms", "control_gain"])
def test_every_serving_threshold_keyword_is_evaluated(key: str) -> None:
    """A threshold that is accepted but never judged would pass silently (match_tokens: above)."""
    plain = evaluate(_run(0.1, 896), {})
    judged = evaluate(_run(0.1, 896), {key: 0.05})
    assert plain.verdicts == [] and plain.problems == []
    assert judged.notes != plain.notes or [v.metric for v in judged.verdicts] == [key]

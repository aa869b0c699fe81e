"""What a scenario concludes: verdicts on every threshold, proof of reuse, output integrity."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.qualify import reuse
from pytest_mooncake.qualify.protocol import RoundResult, ScenarioRun
from pytest_mooncake.qualify.reuse import evaluate
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.results.schema import Outcome
from pytest_mooncake.serving import RequestError, RequestRecord
from pytest_mooncake.serving.stats import yuen


def _record(i: int, round_name: str, ttft: float, cached: int, tpot: float = 0.01) -> RequestRecord:
    e2e = ttft + 3 * tpot
    return RequestRecord(
        request_id=f"r{i}", scenario="high_reuse", round=round_name, api="completions", run_start_epoch_s=0.0,
        run_start_monotonic_s=0.0, scheduled_at_s=0.0, sent_at_s=0.0, finished_at_s=e2e, ttft_s=ttft,
        itl_s=(tpot,) * 3, tpot_s=tpot, e2e_s=e2e, prompt_tokens=1000, completion_tokens=4, cached_tokens=cached,
        content_chunks=4, text="same", error=None,
    )


def _answer(text: str, token_ids: tuple[int, ...] | None = None) -> RequestRecord:
    return dataclasses.replace(_record(0, "repeat", 1.0, 0), text=text, token_ids=token_ids)


def _run(hit_ttft: float, hit_cached: int, repeat_text: str = "same", hit_tpot: float = 0.01,
         scenario: Scenario = Scenario("high_reuse", 8, 900, 100, reuse=1.0)) -> ScenarioRun:
    cold = RoundResult("cold", [_record(i, "cold", 1.0 + 0.01 * i, 0) for i in range(8)], 8.0)
    hit = RoundResult("hit", [_record(i, "hit", hit_ttft + 0.001 * i, hit_cached, hit_tpot) for i in range(8)], 1.0)
    endpoint = Endpoint("http://127.0.0.1:1/v1", "m", spawned=False, label="test")
    return ScenarioRun(scenario, endpoint, [cold, hit], True, True, (_answer("same"), _answer(repeat_text)))


def test_a_real_cache_win_passes() -> None:
    evaluation = evaluate(_run(0.1, 896), {"ttft_reduction": 0.6})
    assert evaluation.problems == [] and [v.outcome for v in evaluation.verdicts] == [Outcome.PASSED]
    # 896 of 1,000 tokens where 900 could be: a full hit, so the only note is the hit rate.
    assert evaluation.notes == ["hit rate: cold 0.0%, hit 89.6% of prompt tokens cached (expected about 90.0%); counters n/a (no /metrics)"]


def test_a_small_gain_fails_with_the_numbers() -> None:
    [problem] = evaluate(_run(0.8, 896), {"ttft_reduction": 0.6}).problems
    assert problem.startswith("ttft_reduction = ") and "misses the threshold >= 60%" in problem


def test_reduction_without_cached_tokens_is_suspicious() -> None:
    """The warm-up trap: something made hits faster, but nothing came from a cache."""
    problems = evaluate(_run(0.1, 0), {"ttft_reduction": 0.6}).problems
    assert problems == ["SUSPICIOUS: a TTFT reduction with zero cached tokens is not a cache win "
                        "(a warm-up effect, or a broken connector answering early)"]


def test_partial_hits_are_reported_as_partial() -> None:
    notes = evaluate(_run(0.1, 300), {"ttft_reduction": 0.6}).notes
    assert notes[1] == ("PARTIAL HITS: only 30.0% of prompt tokens were served from cache where 90.0% could be; "
                        "the verdict measures partial reuse")


def test_partial_hit_boundary_is_exactly_the_share_of_expected() -> None:
    """Expected 50% (a 500-token document in 1,000); 90% of it is 45%, which is still a full hit."""
    half = Scenario("half", 8, 500, 500, reuse=1.0)
    assert len(evaluate(_run(0.1, 450, scenario=half), {}).notes) == 1
    assert evaluate(_run(0.1, 449, scenario=half), {}).notes[1].startswith("PARTIAL HITS: only 44.9%")


def test_expected_hit_rate_is_the_reusing_share_times_the_reusable_part() -> None:
    mixed = Scenario("mixed", 8, 900, 100, reuse=0.5)
    run = _run(0.1, 448, scenario=mixed)
    run.rounds[1].counters = {"prefix_cache_hits": 3.0}
    assert evaluate(run, {}).notes == [
        "hit rate: cold 0.0%, hit 44.8% of prompt tokens cached (expected about 45.0%); counters prefix_cache_hits +3"
    ]


def test_a_cold_round_served_from_cache_is_a_problem() -> None:
    run = _run(0.1, 896)
    run.rounds[0].records[0] = dataclasses.replace(run.rounds[0].records[0], cached_tokens=16)
    assert evaluate(run, {}).problems == [
        "the cold round was not cold: 16 of 8000 prompt tokens came from a cache (another client shares this "
        "endpoint, or the salt did not reach the prompt start)"
    ]


def test_integrity_mismatch_fails_with_a_diff() -> None:
    problems = evaluate(_run(0.1, 896, repeat_text="different"), {"ttft_reduction": 0.6}).problems
    assert problems == ["output integrity: at temperature 0 the cache-hit answer differs from the cold answer:\n"
                        "--- cold\n+++ cache hit\n@@ -1 +1 @@\n-same\n+different"]


def test_match_tokens_compares_only_the_leading_tokens() -> None:
    run = dataclasses.replace(_run(0.1, 896), integrity=(_answer("a b c d"), _answer("a b x y")))
    assert evaluate(run, {"match_tokens": 2}, tokenizer=str.split).problems == []
    [problem] = evaluate(run, {"match_tokens": 3}, tokenizer=str.split).problems
    assert "the first 3 tokens of the answers differ" in problem


def test_integrity_compares_token_ids_where_the_server_returned_them() -> None:
    """A random-weight model's tokens may decode to no text: equal (empty) text proves nothing,
    and different text for the same ids is a detokenizer's matter, not the cache's."""
    same_ids = dataclasses.replace(_run(0.1, 896), integrity=(_answer("", (5, 6, 7)), _answer("x", (5, 6, 7))))
    assert evaluate(same_ids, {}).problems == []
    other_ids = dataclasses.replace(_run(0.1, 896), integrity=(_answer("", (5, 6, 7)), _answer("", (5, 6, 8))))
    assert evaluate(other_ids, {}).problems == ["output integrity: at temperature 0 the cache-hit answer differs from the "
                                                "cold answer:\n--- cold\n+++ cache hit\n@@ -1 +1 @@\n"
                                                "-token ids [5, 6, 7]\n+token ids [5, 6, 8]"]
    assert evaluate(other_ids, {"match_tokens": 2}, tokenizer=str.split).problems == []
    [problem] = evaluate(other_ids, {"match_tokens": 3}, tokenizer=str.split).problems
    assert "the first 3 tokens of the answers differ" in problem
    # Ids on one side only (e.g. a proxy that drops them): the text is all both answers share.
    one_sided = dataclasses.replace(_run(0.1, 896), integrity=(_answer("a", (5,)), _answer("b")))
    assert "the cache-hit answer differs" in evaluate(one_sided, {}).problems[0]


def test_throughput_gain_and_tpot_change_are_judged() -> None:
    evaluation = evaluate(_run(0.1, 896), {"throughput_gain": 1.5, "tpot_change": 0.1})
    assert [(v.metric, v.outcome) for v in evaluation.verdicts] == [("throughput_gain", Outcome.PASSED), ("tpot_change", Outcome.PASSED)]
    slower = evaluate(_run(0.1, 896, hit_tpot=0.02), {"tpot_change": 0.1})
    assert slower.verdicts[0].outcome == Outcome.FAILED and "tpot_change = 100.0%" in slower.problems[0]


def test_negative_control_flags_contamination() -> None:
    clean = evaluate(_run(1.0, 0), {"control_gain": 0.1})
    assert clean.problems == [] and clean.verdicts[0].outcome == Outcome.PASSED
    dirty = evaluate(_run(0.5, 0), {"control_gain": 0.1})
    assert dirty.verdicts[0].outcome == Outcome.FAILED and any("CONTAMINATED" in p for p in dirty.problems)
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
    added = judged.notes[len(plain.notes):]
    if key == "ttft_p90_ms":  # an SLO, not an effect: judged in a note and, when missed, a problem
        assert judged.verdicts == [] and len(added) == 1 and added[0].startswith("hit-round TTFT p90 ")
    else:
        assert [v.metric for v in judged.verdicts] == [key] and added == []


def test_match_tokens_asks_the_endpoint_tokenizer_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    run = dataclasses.replace(_run(0.1, 896), integrity=(_answer("a b c"), _answer("a b x")))
    asked: list[Endpoint] = []

    def tokenizer_for(endpoint: Endpoint, local: object) -> Callable[[str], list[str]]:
        asked.append(endpoint)
        return str.split

    monkeypatch.setattr(reuse, "tokenizer_for", tokenizer_for)
    assert evaluate(run, {"match_tokens": 2}).problems == [] and asked == [run.endpoint]


def test_the_default_statistic_is_the_trimmed_geometric_mean() -> None:
    """One 30 s outlier in the hit round must not turn a clear cache win inconclusive."""
    run = _run(0.1, 896)
    run.rounds[1].records[3] = dataclasses.replace(run.rounds[1].records[3], ttft_s=30.0)
    [verdict] = evaluate(run, {"ttft_reduction": 0.6}).verdicts
    assert verdict.outcome == Outcome.PASSED and "20%-trimmed geometric mean of n=8 vs n=8" in verdict.message
    [by_mean] = evaluate(run, {"ttft_reduction": 0.6}, statistic="mean").verdicts
    assert by_mean.outcome != Outcome.PASSED and "mean of n=8 vs n=8" in by_mean.message


def test_throughput_gain_is_judged_on_the_mean() -> None:
    [verdict] = evaluate(_run(0.1, 896), {"throughput_gain": 1.5}).verdicts
    assert "mean of n=8 vs n=8" in verdict.message


def test_the_hit_round_is_resampled_within_its_designed_strata() -> None:
    """Half the hit requests reuse a document: the interval is that of the two strata, not of the pool."""
    mixed = Scenario("mixed", 8, 900, 100, reuse=0.5)
    run = _run(0.1, 448, scenario=mixed)
    hit = [0.1, 0.12, 0.11, 0.13, 0.9, 1.1, 0.95, 1.05]
    run.rounds[1].records = [dataclasses.replace(r, ttft_s=t) for r, t in zip(run.rounds[1].records, hit)]
    cold = run.round("cold").ttfts()
    stratified, pooled = yuen(cold, [hit[:4], hit[4:]]), yuen(cold, hit)
    assert (stratified.ci_low, stratified.ci_high) != (pooled.ci_low, pooled.ci_high)
    [verdict] = evaluate(run, {"ttft_reduction": 0.1}).verdicts
    assert (verdict.ci_low, verdict.ci_high) == (stratified.ci_low, stratified.ci_high)
    # A multi-turn conversation reuses its history in every hit request: one stratum.
    turns = dataclasses.replace(run, scenario=dataclasses.replace(mixed, turns=2))
    [verdict] = evaluate(turns, {"ttft_reduction": 0.1}).verdicts
    assert (verdict.ci_low, verdict.ci_high) == (pooled.ci_low, pooled.ci_high)


def test_at_most_three_failures_are_quoted() -> None:
    run = _run(0.1, 896)
    for i in range(4):
        run.rounds[1].records[i] = dataclasses.replace(run.rounds[1].records[i], error=RequestError("timeout", f"r{i}"))
    assert evaluate(run, {"ttft_reduction": 0.6}).problems == [
        "4 requests failed, e.g. timeout: r0; timeout: r1; timeout: r2"
    ]


@pytest.mark.parametrize("side", ["cold", "hit"])
def test_tpot_change_needs_tpot_on_both_rounds(side: str) -> None:
    run = _run(0.1, 896)
    index = 0 if side == "cold" else 1
    run.rounds[index].records = [dataclasses.replace(r, tpot_s=None) for r in run.rounds[index].records]
    assert evaluate(run, {"tpot_change": 0.1}).problems == [
        "tpot_change: no TPOT measured (every answer had a single token); raise --mooncake-max-tokens to judge decoding speed"
    ]


def test_goodput_divides_by_the_round_wall_time() -> None:
    # The hit round's wall time is 1.0 s (not the 0.137 s its records span): 8 requests meet the SLO.
    evaluation = evaluate(_run(0.1, 896), {"ttft_p90_ms": 500})
    assert evaluation.notes[-1] == "hit-round TTFT p90 106 ms (SLO 500 ms); goodput 8.00 requests/s"


def test_a_p90_exactly_on_the_slo_meets_it() -> None:
    run = _run(0.1, 896)
    p90 = float(np.percentile(np.asarray(run.round("hit").ttfts()) * 1000.0, 90))
    assert evaluate(run, {"ttft_p90_ms": p90}).problems == []
    assert evaluate(run, {"ttft_p90_ms": np.nextafter(p90, 0)}).problems != []


def test_data_and_summary_carry_everything_judged() -> None:
    run = _run(0.1, 896)
    evaluation = evaluate(run, {"ttft_reduction": 0.6, "ttft_p90_ms": 50})
    data = evaluation.data()
    assert data == {
        "scenario": "high_reuse", "endpoint": "test", "model": "m", "scenario_definition": run.scenario.__dict__,
        "cache_reset": True, "settled": True, "rounds": [r.as_dict() for r in run.rounds],
        "verdicts": [v.as_dict() for v in evaluation.verdicts], "problems": evaluation.problems, "notes": evaluation.notes,
        "control": None, "topology": None, "hit_endpoint": None, "mooncake": None, "prediction": None, "no_prediction": None,
    }
    assert evaluation.summary() == "\n".join([evaluation.verdicts[0].message, *evaluation.notes, *evaluation.problems])
    assert len(evaluation.problems) == 1 and len(evaluation.notes) == 2

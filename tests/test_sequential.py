"""Sequential verdicts: looks until conclusive or out of budget, stamped with looks and stop reason."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.qualify.protocol import RoundResult, ScenarioRun, merge_looks
from pytest_mooncake.qualify.reuse import _strata, measure
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.results.schema import STOP_BUDGET, STOP_DECIDED, Outcome, Rule, Verdict
from pytest_mooncake.serving import RequestError
from pytest_mooncake.serving.sequential import Design, Looks
from tests.test_reuse import _record


def test_each_look_spends_an_equal_share_of_the_error() -> None:
    assert Design(1).level() == pytest.approx(0.95)
    assert Design(12).level(1) == Design(12).level(12) == pytest.approx(1 - 0.05 / 12)
    assert Design(2, seconds=0.5, confidence=0.5).level() == pytest.approx(0.75)  # the smallest valid values pass
    for bad in ({"looks": 0}, {"confidence": 0.0}, {"confidence": 1.0}, {"seconds": 0.0}, {"seconds": -1.0}):
        with pytest.raises(ValueError, match="looks >= 1, 0 < confidence < 1, seconds > 0"):
            Design(**{"looks": 3, **bad})


def test_the_first_look_may_spend_a_larger_share_and_the_shares_add_up() -> None:
    design = Design(24, first_share=0.2)
    assert design.level() == design.level(1) == pytest.approx(0.99)
    assert design.level(2) == design.level(24) == pytest.approx(1 - 0.04 / 23)
    assert sum(1 - design.level(look) for look in range(1, 25)) == pytest.approx(0.05)
    sequence = Looks(design)
    assert sequence.level == pytest.approx(0.99)  # before the first look: the first look's
    for look in sequence:
        assert sequence.level == pytest.approx(design.level(look))
        sequence.conclude([Outcome.INCONCLUSIVE] if look < 3 else [Outcome.PASSED])
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="first_share"):
            Design(5, first_share=bad)
    with pytest.raises(ValueError, match="0 with a single look"):
        Design(1, first_share=0.2)


def _outcomes(sequence: Looks, per_look: list[list[Outcome]]) -> int:
    for look in sequence:
        sequence.conclude(per_look[look - 1])
    return sequence.looks


def test_it_stops_at_the_first_decided_look_or_a_failure() -> None:
    undecided, decided = [Outcome.PASSED, Outcome.INCONCLUSIVE], [Outcome.PASSED, Outcome.PASSED]
    sequence = Looks(Design(5))
    assert (sequence.looks, sequence.stop) == (0, "")
    first = Looks(Design(5))
    for _ in first:
        assert first.conclude(undecided) is False and first.stop == ""
        assert first.conclude(decided) is True
    assert _outcomes(sequence, [undecided, undecided, decided, decided, decided]) == 3
    assert sequence.stop == STOP_DECIDED
    failed = Looks(Design(5))
    assert _outcomes(failed, [[Outcome.FAILED, Outcome.INCONCLUSIVE]] * 5) == 1 and failed.stop == STOP_DECIDED


def test_it_stops_when_the_looks_or_the_seconds_run_out() -> None:
    sequence = Looks(Design(3))
    assert _outcomes(sequence, [[Outcome.INCONCLUSIVE]] * 5) == 3 and sequence.stop == STOP_BUDGET
    now = [100.0]  # a clock that does not start at 0: the budget counts from the first reading
    timed = Looks(Design(10, seconds=25.0), clock=lambda: now[0])
    for _ in timed:
        now[0] += 12.5
        timed.conclude([Outcome.INCONCLUSIVE])
    assert (timed.looks, timed.stop) == (2, STOP_BUDGET)  # exactly 25 s spent ends it


def test_a_look_must_be_judged() -> None:
    with pytest.raises(RuntimeError, match=r"^a look was taken without conclude\(\): call it after judging each look$"):
        for _ in Looks(Design(2)):
            pass
    sequence = Looks(Design(3))
    with pytest.raises(RuntimeError, match="without conclude"):
        for look in sequence:
            if look == 1:
                sequence.conclude([Outcome.INCONCLUSIVE])  # the second look is not judged


def test_the_verdict_says_its_level_looks_and_stop_reason() -> None:
    sequence = Looks(Design(4))
    _outcomes(sequence, [[Outcome.INCONCLUSIVE], [Outcome.PASSED]])
    verdict = sequence.stamp(Verdict("ttft_reduction", None, 0.7, 0.65, 0.75, 16, 16, Rule(">=", 0.6), Outcome.PASSED,
                                     level=sequence.level))
    assert verdict.message == ("ttft_reduction = 70.0% (98.8% CI 65.0% .. 75.0%; 2 looks, decided) "
                               "meets the threshold >= 60%")
    data = verdict.as_dict()
    assert (data["level"], data["looks"], data["stop"]) == (pytest.approx(0.9875), 2, STOP_DECIDED)
    assert Verdict.from_dict(data) == verdict
    out = Verdict("x", None, 0.5, 0.1, 0.9, 8, 8, Rule(">=", 0.6), Outcome.INCONCLUSIVE, looks=4, stop=STOP_BUDGET)
    assert "budget ran out" in out.message and "--mooncake-verdict-looks" in out.message


class _FakeLookProtocol:
    """Serves one ScenarioRun per look from a list of hit TTFTs, as Protocol.run(scenario, look) would."""

    def __init__(self, scenario: Scenario, hit_ttfts: list[float]) -> None:
        self.scenario, self.hit_ttfts, self.looks = scenario, hit_ttfts, []

    def run(self, scenario: Scenario, look: int = 1) -> ScenarioRun:
        self.looks.append(look)
        rng = np.random.default_rng(look)
        n = scenario.requests
        cold = RoundResult("cold", [_record(i, "cold", 1.0 * math.exp(rng.normal(0, 0.3)), 0) for i in range(n)], 8.0)
        ttft = self.hit_ttfts[look - 1]
        hit = RoundResult("hit", [_record(i, "hit", ttft * math.exp(rng.normal(0, 0.3)), 896) for i in range(n)], 1.0)
        endpoint = Endpoint("http://127.0.0.1:1/v1", "m", spawned=False, label="test")
        return ScenarioRun(scenario, endpoint, [cold, hit], True, True, (cold.records[0], cold.records[0]))


SCENARIO = Scenario("high_reuse", 8, 900, 100, reuse=1.0)


def test_a_clear_effect_stops_at_the_first_look() -> None:
    protocol = _FakeLookProtocol(SCENARIO, [0.1] * 12)
    evaluation = measure(protocol, SCENARIO, {"ttft_reduction": 0.6}, Design(12))  # type: ignore[arg-type]
    [verdict] = evaluation.verdicts
    assert protocol.looks == [1] and evaluation.problems == []
    assert (verdict.outcome, verdict.looks, verdict.stop, verdict.n_before) == (Outcome.PASSED, 1, STOP_DECIDED, 8)
    assert "1 look, decided" in verdict.message


def test_a_marginal_effect_takes_more_looks_and_reports_n_at_stop() -> None:
    protocol = _FakeLookProtocol(SCENARIO, [0.38] * 3)
    evaluation = measure(protocol, SCENARIO, {"ttft_reduction": 0.6}, Design(3))  # type: ignore[arg-type]
    [verdict] = evaluation.verdicts
    assert protocol.looks == [1, 2, 3]
    assert (verdict.outcome, verdict.looks, verdict.stop, verdict.n_before) == (Outcome.INCONCLUSIVE, 3, STOP_BUDGET, 24)
    assert evaluation.problems == [verdict.message]


def test_failed_requests_stop_the_looks_at_once() -> None:
    protocol = _FakeLookProtocol(SCENARIO, [0.38] * 3)
    original = protocol.run

    def broken(scenario: Scenario, look: int = 1) -> ScenarioRun:
        run = original(scenario, look)
        bad = run.rounds[1].records[0]
        run.rounds[1].records[0] = dataclasses.replace(bad, error=RequestError("http", "500"))
        return run

    protocol.run = broken  # type: ignore[method-assign]
    evaluation = measure(protocol, SCENARIO, {"ttft_reduction": 0.6}, Design(3))  # type: ignore[arg-type]
    assert protocol.looks == [1] and evaluation.problems[0].startswith("1 requests failed")


def test_looks_merge_round_by_round_and_strata_follow_each_look() -> None:
    scenario = Scenario("medium_reuse", 4, 900, 100, reuse=0.5)
    protocol = _FakeLookProtocol(scenario, [0.2, 0.2])
    merged = merge_looks([protocol.run(scenario, 1), protocol.run(scenario, 2)])
    assert [len(r.records) for r in merged.rounds] == [8, 8]
    assert [r.wall_s for r in merged.rounds] == [16.0, 2.0]
    reusing, fresh = _strata(merged)
    hit = [r.ttft_s for r in merged.rounds[1].records]
    assert reusing == hit[0:2] + hit[4:6] and fresh == hit[2:4] + hit[6:8]

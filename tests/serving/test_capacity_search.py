"""The capacity search: the knee of a server whose TTFT grows with load, its interval, honest failures."""

from __future__ import annotations

import math

import pytest

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.qualify.capacity_search import (
    ABOVE_HIGHEST,
    BELOW_LOWEST,
    FOUND,
    P90,
    Calibration,
    CapacityResult,
    CapacitySLO,
    SearchPlan,
    Step,
    _measure,
    calibrate,
    capacity_gain,
    knee,
    p90,
    search,
)
from pytest_mooncake.results.schema import Outcome, Rule
from pytest_mooncake.serving import RequestRecord, RequestSpec

from .fake_openai_server import FakeOpenAIServer

SLO = CapacitySLO(ttft_p90_ms=250.0)


class TinyMix:
    """Independent two-token requests: the test double's delays decide every latency."""

    name = "tiny"

    def prime(self) -> list[RequestSpec]:
        return []

    def requests(self, tag: str, count: int) -> list[RequestSpec]:
        return [RequestSpec(f"{tag}-{i}", prompt="a b", max_tokens=2) for i in range(count)]


def _step(rate: float, value: float, low: float, high: float) -> Step:
    estimate = P90(value, low, high, 32)
    return Step(rate, 40, 32, 0, estimate, None, goodput=rate, achieved=rate,
                outcome=Rule("<=", 1.0).outcome(low / SLO.ttft_p90_ms, high / SLO.ttft_p90_ms), wall_s=1.0)


def _result(topology: str, rate: float | None, low: float, high: float) -> CapacityResult:
    outcome = BELOW_LOWEST if rate is None else ABOVE_HIGHEST if math.isinf(high) else FOUND
    return CapacityResult(topology, "http://x/v1", "m", "tiny", SLO, Calibration(10.0, None, 20.0, 5), (), rate, low, high,
                          outcome, "test", 1.0)


def test_the_knee_is_interpolated_and_its_interval_ends_on_passed_and_failed_rates() -> None:
    steps = [_step(2, 100, 90, 120), _step(4, 200, 150, 300), _step(8, 450, 300, 800)]
    rate, low, high, outcome = knee(steps, SLO)
    assert outcome == FOUND
    # p90 crosses 250 ms between 4 (200) and 8 (450): 4 + 50/250 * 4.
    assert rate == pytest.approx(4.8)
    # Every step passed up to 2; 4 is inconclusive (150 .. 300 straddles 250); 8 wholly misses.
    assert (low, high) == (2, 8)
    assert [s.outcome for s in steps] == [Outcome.PASSED, Outcome.INCONCLUSIVE, Outcome.FAILED]


def test_a_curve_that_never_misses_is_censored_and_one_that_always_misses_says_so() -> None:
    rate, low, high, outcome = knee([_step(2, 50, 40, 60), _step(4, 80, 60, 100)], SLO)
    assert (rate, low, high, outcome) == (4, 4, math.inf, ABOVE_HIGHEST)
    rate, low, high, outcome = knee([_step(1, 400, 300, 500), _step(2, math.inf, 600, math.inf)], SLO)
    assert (rate, low, high, outcome) == (None, 0.0, 1, BELOW_LOWEST)
    # A lowest step that is only inconclusive bounds nothing below it.
    rate, low, high, outcome = knee([_step(1, 200, 150, 300), _step(2, 600, 500, 700)], SLO)
    assert (low, high, outcome) == (0.0, 2, FOUND) and rate == pytest.approx(1.125)


def test_failed_requests_count_as_infinitely_slow() -> None:
    estimate = p90([100.0] * 8 + [math.inf] * 2)
    assert math.isinf(estimate.value) and estimate.ci_low == 100.0


def test_the_p90_interval_is_distribution_free_and_open_above_for_few_values() -> None:
    # 0.9^28 > 2.5%: with 28 values even the largest may lie below the true p90.
    assert p90([100.0] * 28) == P90(100.0, 100.0, math.inf, 28)
    values = [float(v) for v in range(1, 101)]
    estimate = p90(values)
    # Bin(100, 0.9): P(<= 83) <= 2.5% < P(<= 84), P(>= 96) <= 2.5% < P(>= 95).
    assert (estimate.value, estimate.ci_low, estimate.ci_high) == (91.0, 84.0, 96.0)
    assert p90(values, level=1 - 0.05 / 4).ci_high > 96.0


def test_capacity_gain_is_judged_on_the_interval_both_capacities_allow() -> None:
    base = _result("baseline", 4.0, 3.5, 4.5)
    assert capacity_gain(_result("prefix-cache", 12.0, 11.0, 13.0), base, Rule(">=", 0.5)).outcome == Outcome.PASSED
    assert capacity_gain(_result("prefix-cache", 4.2, 3.8, 4.6), base, Rule(">=", 0.5)).outcome == Outcome.FAILED
    unsure = capacity_gain(_result("prefix-cache", 6.5, 5.0, 8.0), base, Rule(">=", 0.5))
    assert unsure.outcome == Outcome.INCONCLUSIVE and "INCONCLUSIVE" in unsure.message
    assert unsure.ci_low == pytest.approx(5.0 / 4.5 - 1) and unsure.ci_high == pytest.approx(8.0 / 3.5 - 1)
    # A baseline that sustained nothing tried: the gain's interval is open above.
    none = capacity_gain(_result("prefix-cache", 6.0, 5.0, 7.0), _result("baseline", None, 0.0, 1.0), Rule(">=", 0.5))
    assert none.outcome == Outcome.PASSED and math.isinf(none.ci_high)


def test_an_open_bracket_makes_the_gain_inconclusive_for_that_reason() -> None:
    """The fresh-clone CI's red: every baseline step straddled the SLO, so its capacity had no upper
    end; the verdict says the bracket is open instead of reporting a -100% bound."""
    open_baseline = _result("baseline", 2.0, 0.0, math.inf)
    verdict = capacity_gain(_result("prefix-cache", 6.0, 5.0, 7.0), open_baseline, Rule(">=", 0.5))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert math.isinf(verdict.ci_low) and math.isinf(verdict.ci_high) and verdict.stop == "budget exhausted"
    assert ("INCONCLUSIVE because baseline's bracket is open: no rate conclusively met the SLO and no rate "
            "conclusively missed it when the search stopped") in verdict.message
    assert "-100%" not in verdict.message
    # Open above only, on the cache's side: a lower bound that clears the threshold still decides.
    at_least = capacity_gain(_result("prefix-cache", 12.0, 11.0, math.inf), _result("baseline", 4.0, 3.5, 4.5), Rule(">=", 0.5))
    assert at_least.outcome is Outcome.PASSED and at_least.ci_low == pytest.approx(11.0 / 4.5 - 1)


def test_a_repeated_step_pools_its_looks_at_the_looks_level() -> None:
    def record(i: int, ttft_ms: float, start: float) -> RequestRecord:
        return RequestRecord(f"r{i}", "", "", "completions", 0.0, 0.0, start + i * 0.1, start + i * 0.1,
                             start + i * 0.1 + ttft_ms / 1000, ttft_ms / 1000, (), None, ttft_ms / 1000, 10, 1, 0, 1, "x", None)

    looks = [[record(i, 200.0 + i + 3 * look, 0.0) for i in range(20)] for look in range(4)]
    one = _measure(4.0, looks[:1], SLO, 0.2, 1.0, 0)
    four = _measure(4.0, looks, SLO, 0.2, 2.0, 0, level=1 - 0.05 / 4)
    assert (one.looks, one.counted, four.looks, four.counted, four.sent) == (1, 16, 4, 64, 80)
    # 16 values leave the p90 open above; 64, all below the limit, meet it conclusively.
    assert (one.outcome, four.outcome) == (Outcome.INCONCLUSIVE, Outcome.PASSED)


def _endpoint(server: FakeOpenAIServer) -> Endpoint:
    return Endpoint(server.base_url, server.model, spawned=False, label="fake")


def _search(server: FakeOpenAIServer, plan: SearchPlan, slo: CapacitySLO = SLO) -> CapacityResult:
    endpoint = _endpoint(server)
    calibration = calibrate(endpoint, TinyMix(), request_timeout_s=10.0)
    seen: list[tuple[Step, float]] = []
    result = search("fake", endpoint, TinyMix(), slo, plan, calibration, request_timeout_s=10.0,
                    on_step=lambda step, left: seen.append((step, left)))
    assert [s for s, _ in seen] == list(result.steps)  # one progress call per step
    return result


def test_the_knee_of_a_one_slot_server_is_found_and_a_faster_one_carries_more() -> None:
    # One slot and ~60 ms per request: the queue, and with it TTFT, explodes towards ~16 req/s.
    with FakeOpenAIServer(ttft=0.05, itl=0.01, tokens=2, slots=1) as slow:
        result = _search(slow, SearchPlan(deadline_s=90, step_requests=20, start_rate=6.0, min_step_s=1.5))
    assert result.outcome == FOUND, result.summary()
    assert result.bracketed and result.as_dict()["bracketed"], result.summary()
    assert result.ci_low <= result.max_rate <= result.ci_high
    # One slot of ~60 ms cannot carry 20 req/s; a busy host only lowers the knee, so no lower bound.
    assert result.max_rate is not None and 0 < result.max_rate <= 20.0, result.summary()
    assert any(s.meets(SLO) for s in result.steps) and any(not s.meets(SLO) for s in result.steps)
    assert result.as_dict()["topology"] == "fake" and "req/s at TTFT p90 <= 250 ms" in result.summary()
    with FakeOpenAIServer(ttft=0.01, itl=0.005, tokens=2, slots=1) as fast:
        faster = _search(fast, SearchPlan(deadline_s=60, step_requests=20, start_rate=4.0, min_step_s=1.5))
    assert faster.max_rate is not None and faster.max_rate > result.max_rate, (faster.summary(), result.summary())


def test_even_the_lowest_rate_missing_the_slo_is_a_clear_result() -> None:
    with FakeOpenAIServer(ttft=0.3, itl=0.01, tokens=2) as server:
        result = _search(server, SearchPlan(deadline_s=60, step_requests=10, start_rate=8.0, min_rate=4.0, min_step_s=0),
                         CapacitySLO(ttft_p90_ms=100.0))
    assert result.outcome == BELOW_LOWEST and result.max_rate is None
    assert [s.rate for s in result.steps] == [8.0, 4.0]
    assert "even the lowest rate tried, 4 req/s, misses the SLO" in result.summary()


def test_a_deadline_too_short_for_one_step_says_what_to_change() -> None:
    with FakeOpenAIServer(ttft=0.01, itl=0.0, tokens=2) as server:
        with pytest.raises(RuntimeError, match="no step fits.*--mooncake-capacity-deadline"):
            _search(server, SearchPlan(deadline_s=3, step_requests=20, start_rate=1.0, min_step_s=0))


def test_a_burst_is_not_taken_for_a_sustained_rate() -> None:
    # 20 arrivals at 200 req/s are one burst a 20 ms server drains in 0.4 s, under the SLO;
    # offered for 1.5 s, the same rate piles up 300 requests and misses it.
    with FakeOpenAIServer(ttft=0.02, itl=0.0, tokens=2, slots=1) as server:
        result = _search(server, SearchPlan(deadline_s=60, step_requests=20, start_rate=200.0, min_step_s=1.5,
                                            max_steps=1), CapacitySLO(ttft_p90_ms=500.0))
    (step,) = result.steps
    assert step.sent == 300 and not step.meets(CapacitySLO(ttft_p90_ms=500.0)), result.summary()


def test_the_p90_interval_holds_for_thousands_of_values() -> None:
    # A long step at a high rate pools thousands of requests; C(n, i) then passes a float's range.
    values = [float(v) for v in range(1, 5001)]
    estimate = p90(values)
    # Normal approximation: 0.9n ± 1.96 sqrt(0.09n) = 4500 ± 41.6.
    assert estimate.value == 4501.0
    assert 4456 <= estimate.ci_low <= 4460 and 4541 <= estimate.ci_high <= 4545

"""The negative control vouches for a run only when it is clean; noise makes it INCONCLUSIVE, never passed."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.tokens import TokenPool
from pytest_mooncake.qualify.protocol import ReuseProtocol, RoundResult, ScenarioRun
from pytest_mooncake.qualify.reuse import evaluate
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.results.schema import Outcome, Rule, Statistic
from pytest_mooncake.serving import RequestRecord, judge

from .fake_openai_server import FakeOpenAIServer

LIMIT = 0.10
CONTROL = Scenario("low_reuse", 8, 200, 50, reuse=0.0, max_tokens=2)


def _record(i: int, round_name: str, ttft: float, cached: int = 0) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", scenario="low_reuse", round=round_name, api="completions", run_start_epoch_s=0.0,
        run_start_monotonic_s=0.0, scheduled_at_s=0.0, sent_at_s=0.0, finished_at_s=ttft + 0.03, ttft_s=ttft,
        itl_s=(0.01,) * 3, tpot_s=0.01, e2e_s=ttft + 0.03, prompt_tokens=250, completion_tokens=4,
        cached_tokens=cached, content_chunks=4, text="t", error=None,
    )


def _control(cold: list[float], hit: list[float], cached: int = 0) -> ScenarioRun:
    rounds = [RoundResult("cold", [_record(i, "cold", v) for i, v in enumerate(cold)], sum(cold)),
              RoundResult("hit", [_record(i, "hit", v, cached) for i, v in enumerate(hit)], sum(hit))]
    endpoint = Endpoint("http://127.0.0.1:1/v1", "m", spawned=False, label="test")
    return ScenarioRun(CONTROL, endpoint, rounds, True, True, None)


# Hits as slow as cold requests, hits twice as fast, and a noisy pair whose interval straddles 10%.
SAME = ([1.0 + 0.01 * i for i in range(8)], [1.0 + 0.01 * i for i in range(8)])
HALVED = ([1.0 + 0.01 * i for i in range(8)], [0.5 + 0.005 * i for i in range(8)])
NOISY = ([1.0, 0.3, 1.9, 0.6, 1.4, 0.9, 2.2, 0.4], [0.7, 1.6, 0.35, 1.1, 0.5, 1.8, 0.45, 0.8])


def test_a_control_inside_the_limit_is_clean() -> None:
    evaluation = evaluate(_control(*SAME), {"control_gain": LIMIT})
    [verdict] = evaluation.verdicts
    assert (verdict.outcome, evaluation.problems) == (Outcome.PASSED, [])
    assert evaluation.control is not None and evaluation.control["outcome"] == Outcome.PASSED
    assert "clean: no gain above 10%" in verdict.message


def test_a_control_significantly_above_the_limit_is_contaminated() -> None:
    evaluation = evaluate(_control(*HALVED), {"control_gain": LIMIT})
    [problem] = evaluation.problems
    assert evaluation.verdicts[0].outcome == Outcome.FAILED and "CONTAMINATED" in problem and "gain 50.0%" in problem


def test_a_cached_token_contaminates_even_a_control_without_gain() -> None:
    evaluation = evaluate(_control(*SAME, cached=16), {"control_gain": LIMIT})
    assert evaluation.verdicts[0].outcome == Outcome.FAILED
    assert "128 cached tokens; CONTAMINATED" in evaluation.problems[0]


def test_an_interval_straddling_the_limit_is_inconclusive_not_clean() -> None:
    """The field case: a 35.8% gain with a 95% CI of -31% .. 54% had passed as "no gain above 10%"."""
    cold, hit = NOISY
    straddle = judge("control_gain", cold, hit, Rule("<=", LIMIT))
    assert straddle.ci_low < LIMIT < straddle.ci_high, "the planted samples must straddle the limit"
    evaluation = evaluate(_control(cold, hit), {"control_gain": LIMIT})
    [verdict] = evaluation.verdicts
    [problem] = evaluation.problems
    assert verdict.outcome == Outcome.INCONCLUSIVE
    assert problem.startswith(f"negative control: gain {straddle.effect:.1%} (95% CI {straddle.ci_low:.1%} .. "
                              f"{straddle.ci_high:.1%}")
    assert "INCONCLUSIVE" in problem and "does not vouch for the run's gains" in problem


def test_the_control_reports_its_power() -> None:
    """The smallest detectable gain is the limit plus the interval's lower half-width."""
    cold, hit = NOISY
    straddle = judge("control_gain", cold, hit, Rule("<=", LIMIT))
    evaluation = evaluate(_control(cold, hit), {"control_gain": LIMIT})
    assert evaluation.control is not None
    detectable = LIMIT + straddle.effect - straddle.ci_low
    assert evaluation.control["detectable_gain"] == pytest.approx(detectable)
    assert f"detects gains of {detectable:.0%} or more" in evaluation.verdicts[0].message
    tight = evaluate(_control(*SAME), {"control_gain": LIMIT}).control
    assert tight is not None and tight["detectable_gain"] < evaluation.control["detectable_gain"]


def test_a_noisy_server_makes_the_control_inconclusive_end_to_end() -> None:
    """The measured path: the protocol's interleaved control rounds against the test double
    with log-normal first-token jitter (seeded by request id, so the delays are the same each run)."""
    pool = TokenPool(tuple(range(1000, 9000)) * 4)
    config = MooncakeConfig.from_defaults(request_timeout=30)
    with FakeOpenAIServer(ttft=0.05, itl=0.001, tokens=2, jitter=1.0) as server:
        endpoint = Endpoint(server.base_url, server.model, spawned=False, label="noisy")
        run = ReuseProtocol(endpoint, pool, config, "control-e2e", warm_up=False).run(CONTROL)
    evaluation = evaluate(run, {"control_gain": LIMIT})
    [verdict] = evaluation.verdicts
    assert verdict.outcome == Outcome.INCONCLUSIVE, verdict.message
    assert verdict.ci_low < LIMIT < verdict.ci_high


def test_the_control_verdict_and_its_record_are_exact() -> None:
    cold, hit = NOISY
    straddle = judge("control_gain", cold, hit, Rule("<=", LIMIT))
    evaluation = evaluate(_control(cold, hit), {"control_gain": LIMIT})
    [verdict] = evaluation.verdicts
    assert verdict == straddle and verdict.rule == Rule("<=", 0.1) and verdict.statistic is Statistic.TRIMMED
    assert evaluation.control == {"outcome": Outcome.INCONCLUSIVE, "cached_tokens": 0,
                                  "detectable_gain": pytest.approx(LIMIT + straddle.effect - straddle.ci_low), "limit": LIMIT}
    assert verdict.message.endswith(
        "INCONCLUSIVE: the interval straddles 10%, so the control cannot tell a gain from none and does not vouch for "
        f"the run's gains; more requests per round narrow it. Power: at this n it detects gains of "
        f"{LIMIT + straddle.effect - straddle.ci_low:.0%} or more")
    contaminated = evaluate(_control(*HALVED), {"control_gain": LIMIT}).verdicts[0].message
    assert "; CONTAMINATED: unique prompts got faster or were cached; the run's gains are not vouched for. Power" in contaminated


def test_a_single_cached_token_contaminates() -> None:
    run = _control(*SAME)
    run.rounds[1].records[0] = dataclasses.replace(run.rounds[1].records[0], cached_tokens=1)
    assert evaluate(run, {"control_gain": LIMIT}).verdicts[0].outcome == Outcome.FAILED


def test_the_control_is_judged_on_the_statistic_asked_for() -> None:
    """One slow cold request doubles the cold mean (16 s / 8 = 2 s) but is trimmed from the trimmed geometric mean
    (1 s): on the mean, hits of 1 s are a 50% gain; on the default statistic, none. The mean's interval reaches down
    to no gain (a third of the resamples, (7/8)^8, miss the slow request), so that control is INCONCLUSIVE, the
    default's clean."""
    cold, hit = [1.0] * 7 + [9.0], [1.0] * 8
    mean = evaluate(_control(cold, hit), {"control_gain": LIMIT}, statistic="mean").verdicts[0]
    assert mean.effect == pytest.approx(0.5) and mean.outcome == Outcome.INCONCLUSIVE
    assert mean.message.startswith("negative control: gain 50.0% (95% CI ") and "mean of n=8 vs n=8" in mean.message
    trimmed = evaluate(_control(cold, hit), {"control_gain": LIMIT}).verdicts[0]
    assert trimmed.effect == 0.0 and trimmed.outcome == Outcome.PASSED
    assert "20%-trimmed geometric mean of n=8 vs n=8" in trimmed.message

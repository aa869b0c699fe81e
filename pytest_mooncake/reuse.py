"""What a serving scenario concludes: verdicts, proof of reuse, output integrity.

``evaluate`` turns a measured ``ScenarioRun`` into a list of problems (empty when the
scenario passes) and the data the results file and the report carry.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from .protocol import ScenarioRun
from .verdict import FAILED, PASSED, Verdict, goodput, judge_at_least, reduction_ci

# Below this share of the expected reusable tokens, a hit is reported as partial.
PARTIAL_HIT = 0.9


@dataclass
class Evaluation:
    run: ScenarioRun
    verdicts: list[Verdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def data(self) -> dict[str, Any]:
        return {
            "scenario": self.run.scenario.name,
            "endpoint": self.run.endpoint.label,
            "model": self.run.endpoint.model,
            "scenario_definition": self.run.scenario.__dict__,
            "cache_reset": self.run.cache_reset,
            "settled": self.run.settled,
            "rounds": [r.as_dict() for r in self.run.rounds],
            "verdicts": [v.as_dict() for v in self.verdicts],
            "problems": self.problems,
            "notes": self.notes,
        }

    def summary(self) -> str:
        lines = [v.message for v in self.verdicts] + self.notes + self.problems
        return "\n".join(lines)


def _proof_of_reuse(evaluation: Evaluation) -> None:
    run = evaluation.run
    cold, hit = run.round("cold").stats, run.round("hit").stats
    if cold["cached_tokens"]:
        evaluation.problems.append(
            f"the cold round was not cold: {cold['cached_tokens']} of {cold['prompt_tokens']} prompt tokens came from a "
            "cache (another client shares this endpoint, or the salt did not reach the prompt start)"
        )
    expected = run.scenario.reuse * run.scenario.reuse_ratio
    evaluation.notes.append(
        f"hit rate: cold {cold['hit_rate']:.1%}, hit {hit['hit_rate']:.1%} of prompt tokens cached "
        f"(expected about {expected:.1%}); counters {run.round('hit').counters or 'n/a'}"
    )
    if expected and hit["hit_rate"] < PARTIAL_HIT * expected:
        evaluation.notes.append(
            f"PARTIAL HITS: only {hit['hit_rate']:.1%} of prompt tokens were served from cache where "
            f"{expected:.1%} could be; the verdict measures partial reuse"
        )


def _integrity(evaluation: Evaluation) -> None:
    if evaluation.run.integrity is None:
        return
    cold, hit = evaluation.run.integrity
    if cold != hit:
        diff = "\n".join(difflib.unified_diff([cold], [hit], "cold", "cache hit", lineterm=""))
        evaluation.problems.append(
            f"output integrity: at temperature 0 the cache-hit answer differs from the cold answer:\n{diff}"
        )


def _strata(run: ScenarioRun) -> list[list[float]]:
    """Hit-round TTFTs split into the requests that reuse a document and those that do not."""
    reusing = round(run.scenario.reuse * run.scenario.requests) if not run.scenario.turns else len(run.round("hit").records)
    ok = [r for r in run.round("hit").records if r.error is None and r.ttft_s is not None]
    return [[r.ttft_s for r in ok[:reusing]], [r.ttft_s for r in ok[reusing:]]]  # type: ignore[misc]


def evaluate(run: ScenarioRun, thresholds: dict[str, float], *, statistic: str = "median") -> Evaluation:
    evaluation = Evaluation(run)
    errors = run.errors()
    if errors:
        evaluation.problems.append(f"{len(errors)} requests failed, e.g. " + "; ".join(errors[:3]))
        return evaluation
    _proof_of_reuse(evaluation)
    _integrity(evaluation)
    cold, hit = run.round("cold").ttfts(), run.round("hit").ttfts()
    if "ttft_reduction" in thresholds:
        verdict = judge_at_least("ttft_reduction", cold, _strata(run), thresholds["ttft_reduction"], statistic=statistic)
        evaluation.verdicts.append(verdict)
        if verdict.outcome == PASSED and run.round("hit").stats["cached_tokens"] == 0:
            evaluation.problems.append(
                "SUSPICIOUS: a TTFT reduction with zero cached tokens is not a cache win "
                "(a warm-up effect, or a broken connector answering early)"
            )
        elif verdict.outcome != PASSED:
            evaluation.problems.append(verdict.message)
    if "ttft_p90_ms" in thresholds:
        _slo(evaluation, thresholds["ttft_p90_ms"])
    if "control_gain" in thresholds:
        _negative_control(evaluation, cold, hit, thresholds["control_gain"], statistic)
    return evaluation


def _slo(evaluation: Evaluation, limit_ms: float) -> None:
    hit = evaluation.run.round("hit")
    p90 = hit.stats["ttft_ms"]["p90"]
    rate = goodput(hit.records, hit.wall_s, ttft_ms=limit_ms)
    evaluation.notes.append(f"hit-round TTFT p90 {p90:.0f} ms (SLO {limit_ms:.0f} ms); goodput {rate:.2f} requests/s")
    if p90 > limit_ms:
        evaluation.problems.append(f"TTFT p90 {p90:.0f} ms > SLO {limit_ms:.0f} ms (n={hit.stats['n']})")


def _negative_control(evaluation: Evaluation, cold: list[float], hit: list[float], limit: float, statistic: str) -> None:
    """No reuse was arranged, so a gain significantly above ``limit`` means the measurement is contaminated."""
    effect, low, high = reduction_ci(cold, hit, statistic=statistic)
    cached = evaluation.run.round("hit").stats["cached_tokens"]
    contaminated = low > limit or cached > 0
    outcome = FAILED if contaminated else PASSED
    message = (
        f"negative control: gain {effect:.1%} (95% CI {low:.1%} .. {high:.1%}), {cached} cached tokens; "
        + ("CONTAMINATED: unique prompts got faster or were cached" if contaminated else f"no gain significantly above {limit:.0%}")
    )
    evaluation.verdicts.append(
        Verdict("control_gain", f"<= {limit:g}", len(cold), len(hit), effect, low, high, outcome, message)
    )
    if contaminated:
        evaluation.problems.append(message)


"""What a serving scenario concludes: verdicts, proof of reuse, output integrity.

``evaluate`` turns a measured ``ScenarioRun`` into a list of problems (empty when the
scenario passes) and the data the results file and the report carry. Each threshold of
the test (``mooncake_perf`` marker or profile) is judged on the cold and the hit round:

- ``ttft_reduction``: 1 - TTFT(hit)/TTFT(cold) >= X;
- ``throughput_gain``: the request-throughput gain of the hit round, judged as the speed-up
  of the mean end-to-end latency (the rounds send one request at a time) >= X;
- ``tpot_change``: TPOT(hit)/TPOT(cold) - 1 within ±X (decoding must not slow down);
- ``ttft_p90_ms``: the hit round's p90 TTFT SLO, with goodput;
- ``control_gain``: the negative control: clean when the whole interval is within X,
  CONTAMINATED when it is wholly above (or a token was cached), INCONCLUSIVE otherwise;
- ``match_tokens``: the exact repeat's first N tokens must equal the cold answer's
  (without it, the whole answer must). Token ids are compared where the server returned them
  (always for a random-weight model, whose tokens may decode to no text), else the text.
"""

from __future__ import annotations

import dataclasses
import difflib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_mooncake.endpoints.tokens import Tokenize, tokenizer_for
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.qualify.breakdown import HEADING, describe, ttft_breakdown
from pytest_mooncake.qualify.capacity import ModelShape, predict_hit
from pytest_mooncake.qualify.protocol import ReuseProtocol, ScenarioRun, merge_looks
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.results.schema import Op, Outcome, Round, Rule, Statistic, Verdict, uncredit_unserved
from pytest_mooncake.serving import PHASES, SLO, judge, round_stats
from pytest_mooncake.serving.sequential import Design, Looks

Stamp = Callable[[Verdict], Verdict]

__all__ = ["Explain", "evaluate", "measure"]

# Below this share of the expected reusable tokens, a hit is reported as partial.
PARTIAL_HIT = 0.9


@dataclass(frozen=True)
class Explain:
    """What the design's arithmetic needs: the served model's shape and the store's read bandwidth
    measured in the same run."""

    shape: ModelShape
    read_bytes_per_s: float


@dataclass
class Evaluation:
    run: ScenarioRun
    verdicts: list[Verdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The negative control's outcome and power, when the scenario is one.
    control: dict[str, Any] | None = None
    # On a Mooncake topology: what proves (or disproves) that Mooncake served the hits.
    mooncake: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    # Why a Mooncake hit round has no prediction beside it (told where the prediction would be).
    no_prediction: str | None = None
    level: float = 0.95  # the level of every interval judged (a sequential look's)
    stamp: Stamp = lambda verdict: verdict  # a sequential verdict's looks and stop reason

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
            "control": self.control,
            "topology": self.run.topology.name if self.run.topology else None,
            "hit_endpoint": self.run.hit_endpoint.label if self.run.hit_endpoint else None,
            "mooncake": self.mooncake,
            "prediction": self.prediction,
            "no_prediction": self.no_prediction,
        }

    def summary(self) -> str:
        return "\n".join([v.message for v in self.verdicts] + self.notes + self.problems)

    def judged(self, verdict: Verdict) -> Verdict:
        # After NOT SERVED BY MOONCAKE a gain cannot pass, and its line must not read "meets".
        verdict = uncredit_unserved([*self.verdicts, self.stamp(verdict)])[-1]
        self.verdicts.append(verdict)
        if verdict.outcome is not Outcome.PASSED:
            self.problems.append(verdict.message)
        return verdict


def _expected_hit_rate(run: ScenarioRun) -> float:
    """Share of the hit round's prompt tokens a cache can serve. A KV connector stores whole
    blocks only, so on a Mooncake topology a document's tail shorter than a block is recomputed."""
    scenario = run.scenario
    if run.topology is None or not run.topology.mooncake or not scenario.prompt_tokens:
        return scenario.reuse * scenario.reuse_ratio
    reusable = scenario.document_tokens // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
    return scenario.reuse * reusable / scenario.prompt_tokens


def _proof_of_reuse(evaluation: Evaluation) -> None:
    run = evaluation.run
    cold, hit = run.round(Round.COLD).stats, run.round(Round.HIT).stats
    if cold["cached_tokens"]:
        evaluation.problems.append(
            f"the cold round was not cold: {cold['cached_tokens']} of {cold['prompt_tokens']} prompt tokens came from a "
            "cache (another client shares this endpoint, or the salt did not reach the prompt start)"
        )
    expected = _expected_hit_rate(run)
    evaluation.notes.append(
        f"hit rate: cold {cold['hit_rate']:.1%}, hit {hit['hit_rate']:.1%} of prompt tokens cached "
        f"(expected about {expected:.1%}); counters {_counters(run, Round.HIT)}"
    )
    if expected and hit["hit_rate"] < PARTIAL_HIT * expected:
        evaluation.notes.append(
            f"PARTIAL HITS: only {hit['hit_rate']:.1%} of prompt tokens were served from cache where "
            f"{expected:.1%} could be; the verdict measures partial reuse"
        )


def _counters(run: ScenarioRun, round_name: Round) -> str:
    # The TTFT phases' histograms are told apart, as the breakdown (qualify.breakdown).
    counters = {k: v for k, v in run.round(round_name).counters.items() if k not in PHASES}
    return ", ".join(f"{key} {value:+g}" for key, value in sorted(counters.items())) or "n/a (no /metrics)"


def _breakdown(evaluation: Evaluation) -> None:
    run = evaluation.run
    # Interleaved: one set of counters for the cold and the hit requests, nothing to split. A server
    # without vLLM's phase histograms gets no line (each round's record says why it has no split).
    if run.interleaved or not any("server_ttft_s_count" in run.round(r).counters for r in (Round.COLD, Round.HIT)):
        return
    parts = [describe(str(name), ttft_breakdown(run.round(name).records, run.round(name).counters))
             for name in (Round.COLD, Round.HIT)]
    evaluation.notes.append(HEADING + "; ".join(parts))


def _mooncake_proof(evaluation: Evaluation) -> None:
    """On a Mooncake topology a hit must be a Mooncake hit: external hits in the hit round, and
    the cold round's stored keys beside the whole-block prediction."""
    run = evaluation.run
    if run.topology is None or not run.topology.mooncake:
        return
    cold, hit = run.round(Round.COLD), run.round(Round.HIT)
    external = hit.counters.get("external_prefix_cache_hits")
    counted = cold.records + (hit.records if run.interleaved else [])
    predicted = sum((r.prompt_tokens or 0) // KV_BLOCK_TOKENS for r in counted if r.ok)
    # The key count is a gauge: keys evicted meanwhile were stored too, and make any comparison polluted.
    # Interleaved rounds share one set of counters: count it once.
    evicted = sum(r.counters.get("master_evicted_key_count", 0.0) for r in (run.rounds[:1] if run.interleaved else run.rounds))
    stored = cold.counters.get("master_key_count")
    stored = None if stored is None else stored + cold.counters.get("master_evicted_key_count", 0.0)
    evaluation.mooncake = {"topology": run.topology.name, "connector": run.topology.connector,
                           "external_hit_tokens": external, "served": bool(external and external > 0),
                           "stored_keys_cold": stored, "predicted_blocks_cold": predicted,
                           "stored_bytes_cold": cold.counters.get("master_allocated_bytes"),
                           "evicted_keys": evicted, "polluted": evicted > 0}
    where = " (and the hit round interleaved with it)" if run.interleaved else ""
    if stored is not None and evicted > 0:
        evaluation.notes.append(f"POLLUTED: the master evicted {evicted:g} keys during this scenario, so the {stored:+g} keys "
                                f"counted as stored in the cold round{where} cannot be set against the {predicted} whole "
                                f"{KV_BLOCK_TOKENS}-token blocks its prompts predict")
    elif stored is not None:
        evaluation.notes.append(f"Mooncake stored {stored:+g} keys in the cold round{where}; "
                                f"whole {KV_BLOCK_TOKENS}-token blocks of its prompts predict {predicted}")
    if run.scenario.reuse > 0 and not evaluation.mooncake["served"]:
        n = len(hit.records)
        served = float(external or 0)
        evaluation.judged(Verdict(
            "mooncake_served", None, served, served, served, n, n, Rule(Op.ABOVE, 0), Outcome.FAILED,
            wording=f"NOT SERVED BY MOONCAKE: topology {run.topology.name} ({run.topology.connector}) had "
            f"{external if external is not None else 'no'} external prefix-cache hit tokens in the hit round "
            "(vllm:external_prefix_cache_hits); a gain here is not Mooncake's, so no verdict on it can pass"))


def _prediction(evaluation: Evaluation, explain: Explain | str) -> None:
    """The hit TTFT the design's arithmetic predicts beside the measured one, or why there is none."""
    run = evaluation.run
    hits = [r for r in run.round(Round.HIT).records if r.ok and r.cached_tokens and r.ttft_s is not None]
    cold = run.round(Round.COLD).ttfts()
    if isinstance(explain, str) or not hits or not cold:
        evaluation.no_prediction = explain if isinstance(explain, str) else "no hit-round request had cached tokens"
        evaluation.notes.append(f"no predicted hit TTFT: {evaluation.no_prediction}")
        return
    prompt = int(statistics.median(r.prompt_tokens or 0 for r in hits))
    cached = int(statistics.median(r.cached_tokens for r in hits))  # hits holds only records with cached tokens
    predicted = predict_hit(explain.shape, prompt, min(cached, prompt), statistics.median(cold), explain.read_bytes_per_s)
    measured = statistics.median(r.ttft_s for r in hits if r.ttft_s is not None)
    evaluation.prediction = {"predicted_ttft_ms": predicted.ttft_s * 1e3, "measured_ttft_ms": measured * 1e3,
                             "measured_over_predicted": measured / predicted.ttft_s, "compute_ms": predicted.compute_s * 1e3,
                             "load_ms": predicted.load_s * 1e3, "kv_bytes": predicted.kv_bytes, "prompt_tokens": prompt,
                             "cached_tokens": cached, "read_gbps": explain.read_bytes_per_s / 1e9}
    # The server's own split of the hit round, beside the two predicted parts (means, not medians).
    split = ttft_breakdown(run.round(Round.HIT).records, run.round(Round.HIT).counters)
    beside = ""
    if "requests" in split:
        evaluation.prediction["measured_prefill_ms"] = split["prefill_ms"]
        evaluation.prediction["measured_kv_load_ms"] = split["kv_load_ms"]
        beside = f"; the server's mean prefill {split['prefill_ms']:.1f} ms" + (
            f", of which KV load {split['kv_load_ms']:.1f} ms" if split["kv_load_ms"] is not None else "")
    evaluation.notes.append(
        f"predicted hit TTFT {predicted.ttft_s * 1e3:.1f} ms = recompute of the uncached tail "
        f"{predicted.compute_s * 1e3:.1f} ms + loading {predicted.kv_bytes / 2**20:.1f} MiB of KV at "
        f"{explain.read_bytes_per_s / 1e9:.2f} GB/s {predicted.load_s * 1e3:.1f} ms; measured {measured * 1e3:.1f} ms "
        f"({measured / predicted.ttft_s:.2f}x the prediction){beside}"
    )


def _integrity(evaluation: Evaluation, match_tokens: float | None, tokenizer: Tokenize) -> None:
    if evaluation.run.integrity is None:
        return
    cold, hit = evaluation.run.integrity
    if cold.token_ids is not None and hit.token_ids is not None:
        # The server's own tokens: exact, and all a random-weight model's answer means.
        shown = [f"token ids {list(cold.token_ids)}", f"token ids {list(hit.token_ids)}"]
        answers: list[Any] = [list(cold.token_ids), list(hit.token_ids)]
    else:
        shown = [cold.text, hit.text]
        answers = shown if match_tokens is None else [list(tokenizer(text)) for text in shown]
    n = None if match_tokens is None else int(match_tokens)
    same = answers[0][:n] == answers[1][:n]
    what = "the cache-hit answer differs from the cold answer" if n is None else f"the first {n} tokens of the answers differ"
    if not same:
        diff = "\n".join(difflib.unified_diff(shown[:1], shown[1:], "cold", "cache hit", lineterm=""))
        evaluation.problems.append(f"output integrity: at temperature 0 {what}:\n{diff}")


def _strata(run: ScenarioRun) -> list[list[float]]:
    """Hit-round TTFTs split into the requests that reuse a document and those that do not
    (each look's hit round starts with its reusing requests)."""
    records = run.round(Round.HIT).records
    if run.scenario.turns:
        return [[r.ttft_s for r in records if r.ok and r.ttft_s is not None], []]
    size = run.scenario.requests
    reusing = round(run.scenario.reuse * size)
    strata: list[list[float]] = [[], []]
    for index, r in enumerate(records):
        if r.ok and r.ttft_s is not None:
            strata[index % size >= reusing].append(r.ttft_s)
    return strata


def _values(run: ScenarioRun, round_name: Round, metric: str) -> list[float]:
    return [v for r in run.round(round_name).records if r.ok and (v := getattr(r, metric)) is not None]


def measure(
    protocol: ReuseProtocol, scenario: Scenario, thresholds: dict[str, float], design: Design, *, statistic: str = Statistic.TRIMMED.value,
    tokenizer: Tokenize | None = None, explain: Explain | str | None = None,
) -> Evaluation:
    """``scenario`` measured in looks and judged after each (``serving.sequential``): it stops at the
    first look where no verdict is inconclusive or one has failed, or when ``design``'s budget ends."""
    sequence = Looks(design)
    runs: list[ScenarioRun] = []
    for look in sequence:
        # A look sends scenario.requests per round: the one place a look's size is decided.
        runs.append(protocol.run(scenario, look=look))
        evaluation = evaluate(merge_looks(runs), thresholds, statistic=statistic, tokenizer=tokenizer, explain=explain,
                              level=sequence.level)
        judged = {v.message for v in evaluation.verdicts}
        # A problem that is no verdict (failed requests, integrity, a cold round that was not cold) decides too.
        other = [p for p in evaluation.problems if p not in judged]
        sequence.conclude([v.outcome for v in evaluation.verdicts] + ([Outcome.FAILED] if other else []))
    # Judged once more (the same seeded intervals) to stamp the looks and the stop reason.
    return evaluate(merge_looks(runs), thresholds, statistic=statistic, tokenizer=tokenizer, explain=explain,
                    level=sequence.level, stamp=sequence.stamp)


def evaluate(
    run: ScenarioRun, thresholds: dict[str, float], *, statistic: str = Statistic.TRIMMED.value, tokenizer: Tokenize | None = None,
    explain: Explain | str | None = None, level: float = 0.95, stamp: Stamp | None = None,
) -> Evaluation:
    """``tokenizer`` (default: the endpoint's ``/tokenize``) is used only for ``match_tokens``; with
    ``explain``, a Mooncake hit round's TTFT is put beside the design's prediction (a string:
    why it cannot be, recorded and told in its place). Intervals are at ``level``; ``stamp`` marks
    the verdicts of a sequential measurement (see ``measure``)."""
    evaluation = Evaluation(run, level=level)
    if stamp is not None:
        evaluation.stamp = stamp
    errors = run.errors()
    if errors:
        evaluation.problems.append(f"{len(errors)} requests failed, e.g. " + "; ".join(errors[:3]))
        return evaluation
    _proof_of_reuse(evaluation)
    _breakdown(evaluation)
    _mooncake_proof(evaluation)
    if explain is not None and evaluation.mooncake and evaluation.mooncake["served"]:
        _prediction(evaluation, explain)
    _integrity(evaluation, thresholds.get("match_tokens"), tokenizer or tokenizer_for(run.endpoint, None))
    cold, hit = run.round(Round.COLD).ttfts(), run.round(Round.HIT).ttfts()
    if "ttft_reduction" in thresholds:
        verdict = judge("ttft_reduction", cold, _strata(run), Rule(">=", thresholds["ttft_reduction"]), statistic=statistic,
                        level=level)
        evaluation.judged(verdict)
        if verdict.outcome is Outcome.PASSED and run.round(Round.HIT).stats["cached_tokens"] == 0:
            evaluation.problems.append(
                "SUSPICIOUS: a TTFT reduction with zero cached tokens is not a cache win "
                "(a warm-up effect, or a broken connector answering early)"
            )
    if "throughput_gain" in thresholds:
        evaluation.judged(judge("throughput_gain", _values(run, Round.COLD, "e2e_s"), _values(run, Round.HIT, "e2e_s"),
                                Rule(">=", thresholds["throughput_gain"]), effect="speedup", statistic="mean", level=level))
    if "tpot_change" in thresholds:
        _tpot_change(evaluation, thresholds["tpot_change"])
    if "ttft_p90_ms" in thresholds:
        _slo(evaluation, thresholds["ttft_p90_ms"])
    if "control_gain" in thresholds:
        _negative_control(evaluation, cold, hit, thresholds["control_gain"], statistic)
    return evaluation


def _tpot_change(evaluation: Evaluation, band: float) -> None:
    cold, hit = _values(evaluation.run, Round.COLD, "tpot_s"), _values(evaluation.run, Round.HIT, "tpot_s")
    if not cold or not hit:
        evaluation.problems.append("tpot_change: no TPOT measured (every answer had a single token); "
                                   "raise --mooncake-max-tokens to judge decoding speed")
        return
    evaluation.judged(judge("tpot_change", cold, hit, Rule("within", band), effect="change", level=evaluation.level))


def _slo(evaluation: Evaluation, limit_ms: float) -> None:
    hit = evaluation.run.round(Round.HIT)
    stats = round_stats(hit.records, hit.wall_s, slo=SLO(ttft_ms=limit_ms))
    p90 = stats["ttft_ms"]["p90"]
    evaluation.notes.append(f"hit-round TTFT p90 {p90:.0f} ms (SLO {limit_ms:.0f} ms); goodput {stats['goodput']:.2f} requests/s")
    if p90 > limit_ms:
        evaluation.problems.append(f"TTFT p90 {p90:.0f} ms > SLO {limit_ms:.0f} ms (n={stats['n']})")


def _negative_control(evaluation: Evaluation, cold: list[float], hit: list[float], limit: float, statistic: str) -> None:
    """No reuse was arranged, so the control is clean only when its whole interval lies within
    ``limit`` and nothing was cached; CONTAMINATED when the interval lies wholly above it or a
    token was cached; INCONCLUSIVE when the interval straddles it: a control that cannot tell
    a large gain from none cannot vouch for the scenario verdicts beside it."""
    verdict = evaluation.stamp(judge("control_gain", cold, hit, Rule("<=", limit), statistic=statistic, level=evaluation.level))
    cached = evaluation.run.round(Round.HIT).stats["cached_tokens"]
    outcome = Outcome.FAILED if cached > 0 else verdict.outcome
    # The smallest true gain whose interval, as wide as this one, would lie wholly above the limit.
    detectable = limit + (verdict.effect - verdict.ci_low)
    conclusion = {
        Outcome.PASSED: f"clean: no gain above {limit:.0%}",
        Outcome.FAILED: "CONTAMINATED: unique prompts got faster or were cached; the run's gains are not vouched for",
        Outcome.INCONCLUSIVE: f"INCONCLUSIVE: the interval straddles {limit:.0%}, so the control cannot tell a gain from none "
                      "and does not vouch for the run's gains; more requests per round narrow it",
    }[outcome]
    message = (
        f"negative control: gain {verdict.figure}, {cached} cached tokens; {conclusion}. "
        f"Power: at this n it detects gains of {detectable:.0%} or more"
    )
    evaluation.verdicts.append(dataclasses.replace(verdict, outcome=outcome, wording=message))
    evaluation.control = {"outcome": outcome, "cached_tokens": cached, "detectable_gain": detectable, "limit": limit}
    if outcome is not Outcome.PASSED:
        evaluation.problems.append(message)

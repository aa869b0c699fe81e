"""Aggregates over request records, bootstrap intervals for effects, and verdicts on thresholds.

Percentiles use numpy's default (linear interpolation), as vLLM's ``bench serve`` does. Latency
statistics use successful records only; failures are counted by ``RequestError.kind``.

A verdict compares an effect (e.g. ``ttft_reduction = 1 - median(hit)/median(cold)``) with a
threshold through its seeded 95% percentile-bootstrap interval:

- ``passed``: the whole interval is on the passing side;
- ``failed``: the whole interval is on the failing side;
- ``inconclusive``: the interval straddles the threshold (more requests narrow it).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .client import RequestRecord

PASSED, FAILED, INCONCLUSIVE = "passed", "failed", "inconclusive"


@dataclass(frozen=True)
class Percentiles:
    """Mean, median, p90 and p99 in milliseconds of ``n`` values."""

    n: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float

    @classmethod
    def of_seconds(cls, values: Sequence[float]) -> Percentiles | None:
        if len(values) == 0:
            return None
        ms = np.asarray(values, dtype=float) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(int(ms.size), float(ms.mean()), float(p50), float(p90), float(p99))


@dataclass(frozen=True)
class SLO:
    """Per-request service levels for goodput (vLLM's ``--goodput``); ``None`` means no limit."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        # A single-token answer has no TPOT and so cannot miss a TPOT limit.
        checks = ((self.ttft_ms, record.ttft_s), (self.tpot_ms, record.tpot_s), (self.e2e_ms, record.e2e_s))
        return all(limit is None or value is None or value * 1000.0 <= limit for limit, value in checks)


@dataclass(frozen=True)
class RunSummary:
    """What a run measured as a whole. Rates divide by ``duration_s``: first scheduled send to last finish."""

    requests: int
    succeeded: int
    errors_by_kind: dict[str, int]
    duration_s: float
    request_throughput: float
    output_throughput: float
    ttft: Percentiles | None
    tpot: Percentiles | None
    itl: Percentiles | None
    e2e: Percentiles | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_hit_rate: float | None
    goodput: float | None = None
    slo: SLO | None = None


def run_duration(records: Sequence[RequestRecord]) -> float:
    """Seconds from the earliest scheduled send to the latest finish."""
    if not records:
        return 0.0
    return max(r.finished_at_s for r in records) - min(r.scheduled_at_s for r in records)


def summarize(records: Sequence[RequestRecord], *, slo: SLO | None = None, duration_s: float | None = None) -> RunSummary:
    """Aggregate a run; ``duration_s`` defaults to ``run_duration(records)``."""
    ok = [r for r in records if r.ok]
    duration = run_duration(records) if duration_s is None else duration_s
    per_s = (lambda count: count / duration) if duration > 0 else (lambda count: 0.0)
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    cached = sum(r.cached_tokens or 0 for r in ok)
    completion = sum(r.completion_tokens or 0 for r in ok)
    return RunSummary(
        requests=len(records),
        succeeded=len(ok),
        errors_by_kind=dict(Counter(r.error.kind for r in records if r.error is not None)),
        duration_s=duration,
        request_throughput=per_s(len(ok)),
        output_throughput=per_s(completion),
        ttft=Percentiles.of_seconds([r.ttft_s for r in ok if r.ttft_s is not None]),
        tpot=Percentiles.of_seconds([r.tpot_s for r in ok if r.tpot_s is not None]),
        itl=Percentiles.of_seconds([gap for r in ok for gap in r.itl_s]),
        e2e=Percentiles.of_seconds([r.e2e_s for r in ok if r.e2e_s is not None]),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cache_hit_rate=cached / prompt if prompt else None,
        goodput=per_s(sum(slo.met_by(r) for r in records)) if slo is not None else None,
        slo=slo,
    )


# Effects of ``b`` relative to ``a`` given a statistic of each: the reduction is positive when b
# is smaller (faster hits), the change is signed (TPOT within +-10%).
EFFECTS = {
    "reduction": lambda a, b: 1.0 - b / a,
    "change": lambda a, b: b / a - 1.0,
}
STATISTICS = {"median": np.median, "mean": np.mean}


@dataclass(frozen=True)
class Estimate:
    """An effect of sample ``b`` against sample ``a`` with its bootstrap interval."""

    effect_name: str
    statistic: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n_a: int
    n_b: int


def bootstrap_effect(
    a: Sequence[float],
    b: Sequence[float],
    *,
    effect: str = "reduction",
    statistic: str = "median",
    confidence: float = 0.95,
    resamples: int = 5000,
    seed: int = 0,
) -> Estimate:
    """``effect`` of ``b`` vs ``a`` (``reduction``: 1 - stat(b)/stat(a); ``change``: stat(b)/stat(a) - 1)
    with a seeded percentile-bootstrap interval, resampling both samples independently."""
    if effect not in EFFECTS or statistic not in STATISTICS:
        raise ValueError(f"effect must be one of {sorted(EFFECTS)} and statistic one of {sorted(STATISTICS)}, "
                         f"got effect={effect!r}, statistic={statistic!r}")
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.size == 0 or xb.size == 0:
        raise ValueError(f"an effect needs values on both sides, got {xa.size} and {xb.size}; "
                         "were all requests of a round errors?")
    stat, fn = STATISTICS[statistic], EFFECTS[effect]
    if stat(xa) <= 0:
        raise ValueError(f"the {statistic} of the reference sample is {stat(xa)}; a relative effect needs it > 0")
    rng = np.random.default_rng(seed)
    boot_a = stat(rng.choice(xa, size=(resamples, xa.size)), axis=1)
    boot_b = stat(rng.choice(xb, size=(resamples, xb.size)), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        effects = fn(boot_a, boot_b)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.nanpercentile(effects, [tail, 100.0 - tail])
    return Estimate(effect, statistic, float(fn(stat(xa), stat(xb))), float(low), float(high), confidence,
                    int(xa.size), int(xb.size))


_THRESHOLD = re.compile(r"^\s*(?P<metric>[\w.:-]+)\s*(?P<op>>=|<=|within)\s*(?P<pm>±|\+-|\+/-)?\s*(?P<value>[-+]?[\d.]+(?:e[-+]?\d+)?)\s*(?P<pct>%)?\s*$")


@dataclass(frozen=True)
class Threshold:
    """``metric >= value``, ``metric <= value`` or ``metric within ±value`` (a band around 0)."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """E.g. ``"ttft_reduction >= 0.60"``, ``"ttft_reduction >= 60%"``, ``"tpot_change within ±0.10"``."""
        match = _THRESHOLD.match(text)
        if match is None:
            raise ValueError(f"cannot read threshold {text!r}; write 'METRIC >= X', 'METRIC <= X' or "
                             "'METRIC within ±X' (X as a fraction, or with %)")
        value = float(match["value"]) / (100.0 if match["pct"] else 1.0)
        if match["op"] == "within" and value < 0:
            raise ValueError(f"threshold {text!r}: the band of 'within' must be >= 0")
        return cls(match["metric"], match["op"], value)

    def __str__(self) -> str:
        return f"{self.metric} within ±{self.value:g}" if self.op == "within" else f"{self.metric} {self.op} {self.value:g}"

    def holds(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.value
        if self.op == "<=":
            return value <= self.value
        return -self.value <= value <= self.value

    def outcome(self, low: float, high: float) -> str:
        """passed/failed/inconclusive for an interval [low, high]."""
        if self.holds(low) and self.holds(high):
            return PASSED
        if self.op == ">=" and high < self.value or self.op == "<=" and low > self.value:
            return FAILED
        if self.op == "within" and (high < -self.value or low > self.value):
            return FAILED
        return INCONCLUSIVE


@dataclass(frozen=True)
class Verdict:
    """The outcome of an effect against a threshold, with a message a reader can act on.

    ``suspicious`` marks a claimed gain with no evidence of reuse (0 cached tokens in the hit
    round): treat it as a failure of the deployment, whatever the timing says.
    """

    threshold: str
    outcome: str
    estimate: Estimate
    message: str
    suspicious: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED and not self.suspicious


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else str(x)


def judge(threshold: Threshold | str, estimate: Estimate, *, context: str = "", hit_cached_tokens: int | None = None) -> Verdict:
    """Verdict of ``estimate`` against ``threshold``; give ``hit_cached_tokens`` to flag unexplained gains."""
    rule = Threshold.parse(threshold) if isinstance(threshold, str) else threshold
    outcome = rule.outcome(estimate.ci_low, estimate.ci_high)
    e = estimate
    notes: list[str] = []
    suspicious = hit_cached_tokens == 0 and e.effect_name == "reduction" and e.value > 0
    if suspicious:
        notes.append("SUSPICIOUS: the faster round reports 0 cached tokens, so no reuse explains the gain; "
                     "check completion tokens (a 0-token reply is fast) and the connector's logs")
    word = {PASSED: "PASSED", FAILED: "FAILED", INCONCLUSIVE: "INCONCLUSIVE"}[outcome]
    why = {
        PASSED: "the whole interval is on the passing side",
        FAILED: "the whole interval is on the failing side",
        INCONCLUSIVE: "the interval straddles the threshold; more requests per round would narrow it",
    }[outcome]
    message = (
        f"{word}: {rule.metric} = {_pct(e.value)} ({e.effect_name} of the {e.statistic}, n={e.n_b} against "
        f"n={e.n_a}), {e.confidence:.0%} bootstrap CI [{_pct(e.ci_low)}, {_pct(e.ci_high)}], threshold "
        f"{rule}; {why}.{' ' + context if context else ''}{' ' + ' '.join(notes) if notes else ''}"
    )
    return Verdict(str(rule), outcome, estimate, message, suspicious, tuple(notes))


def judge_reduction(
    cold: Sequence[float],
    hit: Sequence[float],
    threshold: Threshold | str,
    *,
    statistic: str = "median",
    hit_cached_tokens: int | None = None,
    seed: int = 0,
    context: str = "",
) -> Verdict:
    """E.g. ``judge_reduction(cold_ttfts, hit_ttfts, "ttft_reduction >= 0.60", hit_cached_tokens=...)``."""
    estimate = bootstrap_effect(cold, hit, effect="reduction", statistic=statistic, seed=seed)
    return judge(threshold, estimate, context=context, hit_cached_tokens=hit_cached_tokens)


def negative_control(
    cold: Sequence[float],
    low_reuse: Sequence[float],
    *,
    max_gain: float = 0.10,
    metric: str = "ttft_reduction",
    statistic: str = "median",
    seed: int = 0,
) -> Verdict:
    """A workload with (almost) no reuse must not get faster than ``max_gain``.

    ``failed`` means contaminated: the "cold" reference was slower than a genuinely comparable
    request (a warm cache from an earlier run, an asymmetric setup), so every gain measured
    against it is suspect.
    """
    estimate = bootstrap_effect(cold, low_reuse, effect="reduction", statistic=statistic, seed=seed)
    verdict = judge(Threshold(metric, "<=", max_gain), estimate)
    if verdict.outcome == FAILED:
        note = (f"CONTAMINATED: a low-reuse round came out {_pct(estimate.value)} faster than its cold reference, "
                "so warm caches from earlier runs or an asymmetric setup inflate every gain; use fresh prompt nonces "
                "and restart or clear the caches between runs")
        return Verdict(verdict.threshold, FAILED, estimate, f"{verdict.message} {note}", False, (note,))
    return verdict

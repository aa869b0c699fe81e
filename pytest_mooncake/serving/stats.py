"""Aggregates over request records, bootstrap intervals for effects, and verdicts on thresholds.

Percentiles use numpy's default (linear interpolation), as vLLM's ``bench serve`` does; latency
statistics use successful records only, failures are counted by ``RequestError.kind``.

A verdict (``pytest_mooncake.results.schema.Verdict``) compares an effect measured in one run with a
threshold through an interval (95%, or a look's level when the verdict is sequential:
``serving.sequential``). An inconclusive one is never a pass: the test fails with the word
INCONCLUSIVE and reports show it apart from failures.

Latency effects are judged on the 20%-trimmed geometric mean (``yuen``): the trimmed mean of
log latencies, with the Yuen-Welch t interval of its difference. On TTFTs with lognormal jitter
and stalls, the shape recorded on busy hosts, it is tighter than the median's bootstrap at the
same n and, being a t interval rather than a bootstrap, keeps its coverage at a look's 8
requests. The median and the mean keep a seeded percentile bootstrap (``bootstrap``).

Effects of sample ``b`` against reference ``a`` (``stat`` is the statistic judged):

- ``reduction`` = 1 - stat(b)/stat(a): e.g. the TTFT reduction of hits against cold requests;
- ``change`` = stat(b)/stat(a) - 1: e.g. the TPOT change, judged ``within ±X``;
- ``speedup`` = stat(a)/stat(b) - 1: on end-to-end latencies with the mean, the request-throughput
  gain of a round sent one request at a time (its requests/s is n / the sum of its latencies).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_mooncake.results.schema import Rule, Statistic, Verdict
from pytest_mooncake.serving.client import RequestRecord
from pytest_mooncake.serving.student_t import t_quantile


def _ms(values: Sequence[float]) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    array = np.asarray(values, dtype=float) * 1000.0
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {"mean": float(array.mean()), "median": float(p50), "p90": float(p90), "p99": float(p99)}


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


def run_duration(records: Sequence[RequestRecord]) -> float:
    """Seconds from the earliest scheduled send to the latest finish."""
    if not records:
        return 0.0
    return max(r.finished_at_s for r in records) - min(r.scheduled_at_s for r in records)


def round_stats(records: Sequence[RequestRecord], wall_s: float | None = None, *, slo: SLO | None = None) -> dict[str, Any]:
    """What a round measured, as stored in the results JSON; rates divide by ``wall_s``
    (default: ``run_duration``)."""
    ok = [r for r in records if r.ok]
    wall = run_duration(records) if wall_s is None else wall_s

    def per_s(count: float) -> float:
        return count / wall if wall > 0 else 0.0

    prompt = sum(r.prompt_tokens or 0 for r in ok)
    cached = sum(r.cached_tokens or 0 for r in ok)
    output = sum(r.completion_tokens or 0 for r in ok)
    stats: dict[str, Any] = {
        "n": len(records),
        "errors": len(records) - len(ok),
        "errors_by_kind": dict(Counter(r.error.kind for r in records if r.error is not None)),
        "ttft_ms": _ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": _ms([r.tpot_s for r in ok if r.tpot_s is not None]),
        "itl_ms": _ms([gap for r in ok for gap in r.itl_s]),
        "e2e_ms": _ms([r.e2e_s for r in ok if r.e2e_s is not None]),
        "requests_per_s": per_s(len(ok)),
        "output_tokens_per_s": per_s(output),
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "cached_tokens": cached,
        "hit_rate": cached / prompt if prompt else 0.0,
    }
    if slo is not None:
        stats["goodput"] = per_s(sum(slo.met_by(r) for r in records))
    return stats


Effect = Callable[[Any, Any], Any]
EFFECTS: dict[str, Effect] = {
    "reduction": lambda a, b: 1.0 - b / a,
    "change": lambda a, b: b / a - 1.0,
    "speedup": lambda a, b: a / b - 1.0,
}
STATISTICS = {"median": np.median, "mean": np.mean}  # with a bootstrap interval; "trimmed": see yuen
TRIM = 0.2  # per side: Wilcox, *Introduction to Robust Estimation and Hypothesis Testing*, 4th ed., 2017, 4.3
Strata = Sequence[float] | Sequence[Sequence[float]]


def _strata(values: Strata) -> list[np.ndarray]:
    if len(values) and isinstance(values[0], Sequence):
        return [np.asarray(s, dtype=float) for s in values if len(s)]  # type: ignore[arg-type]
    return [np.asarray(values, dtype=float)] if len(values) else []


@dataclass(frozen=True)
class Estimate:
    """An effect of ``b`` against ``a`` with its bootstrap interval."""

    effect: str
    statistic: str
    value: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int


def bootstrap(
    a: Sequence[float],
    b: Strata,
    *,
    effect: str = "reduction",
    statistic: str = "median",
    resamples: int = 4000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """``effect`` of ``b`` against ``a`` and its percentile-bootstrap interval at ``level`` (a
    sequential verdict's look uses its spent share of the error, see ``serving.sequential``).

    ``b`` may be given as strata (lists of values): a round that mixes reusing and fresh
    requests by design is resampled within each stratum, so the interval reflects timing
    noise, not a random re-draw of the mix the test fixed. Its statistic is each stratum's,
    weighted by the stratum's share: for the mean that is the pooled mean; for the median it
    is the typical request of each kind in the designed mix (the pooled median of a half-hit,
    half-cold round lands between the two and jumps with every resample).
    """
    if effect not in EFFECTS or statistic not in STATISTICS:
        raise ValueError(f"effect must be one of {sorted(EFFECTS)} and statistic one of {sorted(STATISTICS)}, "
                         f"got effect={effect!r}, statistic={statistic!r}")
    xa, strata = np.asarray(a, dtype=float), _strata(b)
    if xa.size == 0 or not strata:
        raise ValueError(f"an effect needs values on both sides, got {xa.size} and {sum(s.size for s in strata)}; "
                         "were all requests of a round errors?")
    stat = STATISTICS[statistic]
    n_b = sum(s.size for s in strata)
    point_a, point_b = stat(xa), sum(s.size / n_b * stat(s) for s in strata)
    if point_a <= 0 or point_b <= 0:
        raise ValueError(f"the {statistic}s are {point_a:g} and {point_b:g}; a relative effect needs both > 0")
    value, low, high = intervals(xa[None], [s[None] for s in strata], effect=effect, statistic=statistic,
                                 resamples=resamples, level=level, rng=np.random.default_rng(seed))
    return Estimate(effect, statistic, float(value[0]), float(low[0]), float(high[0]), int(xa.size), n_b)


def intervals(
    a: np.ndarray, b: list[np.ndarray], *, effect: str, statistic: str, resamples: int, level: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The effects and percentile-bootstrap intervals of R samples at once (``bootstrap`` passes one,
    the operating-characteristic simulation many): ``a`` is (R, n_a), each stratum of ``b`` (R, n_s)."""
    stat, fn = STATISTICS[statistic], EFFECTS[effect]
    n_b = sum(s.shape[1] for s in b)

    def resampled(x: np.ndarray) -> Any:
        # rng.choice(x, size) of one sample draws exactly these indices.
        index = rng.integers(0, x.shape[1], size=(x.shape[0], resamples, x.shape[1]), dtype=np.int64)
        return stat(np.take_along_axis(x[:, None, :], index, axis=2), axis=-1)

    point_a = stat(a, axis=-1)
    point_b = sum(s.shape[1] / n_b * stat(s, axis=-1) for s in b)
    boot_a = resampled(a)
    boot_b = sum(s.shape[1] / n_b * resampled(s) for s in b)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = round(50 * (1 - level), 12)  # 2.5 for 95%, not 2.5000000000000022
        low, high = np.nanpercentile(fn(boot_a, boot_b), [tail, 100 - tail], axis=-1)
        return fn(point_a, point_b), low, high


def _trimmed(logs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per row of ``logs`` (R, n): the 20%-trimmed mean, its squared standard error
    (n - 1) s_w^2 / (h (h - 1)) from the winsorized variance s_w^2, and h, the values kept
    (n - 2 floor(0.2 n): at least 2 from n = 2 on)."""
    _, n = logs.shape
    if n < 2:  # no spread to estimate: yuen_intervals leaves the interval open
        return logs[:, 0], np.full_like(logs[:, 0], np.inf), n
    g = int(TRIM * n)
    ordered = np.sort(logs)
    kept = n - 2 * g
    winsorized = np.clip(ordered, ordered[:, g:g + 1], ordered[:, n - g - 1:n - g])
    square_se = (n - 1) * winsorized.var(axis=1, ddof=1) / (kept * (kept - 1))
    return ordered[:, g:n - g].mean(axis=1), square_se, kept


def yuen_intervals(a: np.ndarray, b: list[np.ndarray], *, effect: str, level: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The effects and Yuen-Welch intervals of R samples at once: ``a`` is (R, n_a), each stratum of
    ``b`` (R, n_s). The difference of 20%-trimmed means of log latencies (stratum-weighted on the
    ``b`` side) gets a t interval with Welch's degrees of freedom (Yuen, Biometrika 61(1), 1974;
    Wilcox 2017, 5.3); its ends map through ``effect`` to ratios of the geometric means. A side
    with fewer than 2 values kept leaves the interval open."""
    fn = EFFECTS[effect]
    mean_a, se_a, kept_a = _trimmed(np.log(a))
    n_b = sum(s.shape[1] for s in b)
    mean_b, se_b = np.zeros(a.shape[0]), np.zeros(a.shape[0])
    parts = [(se_a, kept_a)]
    for stratum in b:
        weight = stratum.shape[1] / n_b
        mean_s, se_s, kept_s = _trimmed(np.log(stratum))
        mean_b, se_b = mean_b + weight * mean_s, se_b + weight**2 * se_s
        parts.append((weight**2 * se_s, kept_s))
    square_se = se_a + se_b
    difference = mean_b - mean_a  # log of the ratio b / a
    if min(kept for _, kept in parts) < 2:
        half = np.full_like(difference, np.inf)
    else:
        # Welch-Satterthwaite: between the smallest side's kept - 1 (>= 1) and their sum. No spread
        # on either side (all values equal) makes it 0/0: any df then gives a zero-width interval.
        spread = sum(se**2 / (kept - 1) for se, kept in parts)
        df = np.divide(square_se**2, spread, out=np.ones_like(spread), where=spread > 0)
        half = t_quantile(1 - (1 - level) / 2, df) * np.sqrt(square_se)
    ends = fn(1.0, np.exp(difference - half)), fn(1.0, np.exp(difference + half))
    return fn(1.0, np.exp(difference)), np.minimum(*ends), np.maximum(*ends)


def yuen(a: Sequence[float], b: Strata, *, effect: str = "reduction", level: float = 0.95) -> Estimate:
    """``effect`` of ``b`` against ``a`` on 20%-trimmed geometric means, with its Yuen-Welch interval
    at ``level`` (``yuen_intervals``); ``b`` may be given as strata, as for ``bootstrap``."""
    if effect not in EFFECTS:
        raise ValueError(f"effect must be one of {sorted(EFFECTS)}, got effect={effect!r}")
    xa, strata = np.asarray(a), _strata(b)
    if xa.size == 0 or not strata:
        raise ValueError(f"an effect needs values on both sides, got {xa.size} and {sum(s.size for s in strata)}; "
                         "were all requests of a round errors?")
    if min(xa.min(), *(s.min() for s in strata)) <= 0:
        raise ValueError("a geometric mean needs every latency > 0")
    value, low, high = yuen_intervals(xa[None], [s[None] for s in strata], effect=effect, level=level)
    return Estimate(effect, Statistic.TRIMMED.value, float(value[0]), float(low[0]), float(high[0]), int(xa.size),
                    sum(s.size for s in strata))


def judge(
    metric: str,
    before: Sequence[float],
    after: Strata,
    rule: Rule,
    *,
    effect: str = "reduction",
    statistic: str = Statistic.TRIMMED.value,
    context: str = "",
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> Verdict:
    """Verdict on ``effect(after vs before)`` against ``rule`` (``after`` may be strata, see ``bootstrap``)
    through the interval at ``level``: Yuen's for the trimmed geometric mean, a seeded bootstrap's
    for the median or the mean."""
    if statistic == Statistic.TRIMMED.value:
        e = yuen(before, after, effect=effect, level=level)
    else:
        e = bootstrap(before, after, effect=effect, statistic=statistic, level=level, resamples=resamples, seed=seed)
    return Verdict(metric, Statistic(statistic), e.value, e.ci_low, e.ci_high, e.n_a, e.n_b, rule,
                   rule.outcome(e.ci_low, e.ci_high), strata=len(_strata(after)), context=context, level=level)

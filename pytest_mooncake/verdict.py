"""Statistics of a round and verdicts with bootstrap confidence intervals.

A verdict compares an effect measured in one run (e.g. the TTFT reduction of hits vs
cold requests) with a threshold, using a 95% percentile-bootstrap interval:

- ``passed``: the whole interval is on the passing side of the threshold;
- ``failed``: the whole interval is on the failing side;
- ``inconclusive``: the interval straddles the threshold. It is never a pass: the test
  fails with the word INCONCLUSIVE, and reports show it apart from failures. More requests
  per round (``--mooncake-requests-per-scenario``) narrow the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .measure import Record

PASSED, FAILED, INCONCLUSIVE = "passed", "failed", "inconclusive"


def _ms(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values) * 1000.0
    return {
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "p90": float(np.percentile(array, 90)),
        "p99": float(np.percentile(array, 99)),
    }


def goodput(records: Sequence[Record], wall_s: float, *, ttft_ms: float | None, tpot_ms: float | None = None) -> float:
    """Requests per second that met the SLO (vLLM bench serve's goodput)."""
    def meets(r: Record) -> bool:
        if r.error is not None or r.ttft_s is None:
            return False
        if ttft_ms is not None and r.ttft_s * 1000 > ttft_ms:
            return False
        tpot = r.tpot_s
        return tpot_ms is None or tpot is None or tpot * 1000 <= tpot_ms

    return sum(meets(r) for r in records) / wall_s if wall_s > 0 else 0.0


def round_stats(records: Sequence[Record], wall_s: float) -> dict[str, Any]:
    ok = [r for r in records if r.error is None]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    output = sum(r.completion_tokens for r in ok)
    return {
        "n": len(records),
        "errors": len(records) - len(ok),
        "ttft_ms": _ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": _ms([t for r in ok if (t := r.tpot_s) is not None]),
        "itl_ms": _ms([gap for r in ok for gap in r.itl_s]),
        "e2e_ms": _ms([r.e2e_s for r in ok if r.e2e_s is not None]),
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else 0.0,
        "output_tokens_per_s": output / wall_s if wall_s > 0 else 0.0,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "hit_rate": cached / prompt if prompt else 0.0,
    }


Statistic = Callable[[np.ndarray], float]
STATISTICS: dict[str, Statistic] = {"median": lambda a: float(np.median(a)), "mean": lambda a: float(np.mean(a))}


def reduction_ci(
    before: Sequence[float],
    after: Sequence[float] | Sequence[Sequence[float]],
    *,
    statistic: str = "median",
    iterations: int = 4000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``1 - stat(after)/stat(before)`` and its 95% bootstrap interval.

    ``after`` may be given as strata (lists of values): a round that mixes reusing and
    fresh requests by design is resampled within each stratum, so the interval reflects
    timing noise, not a random re-draw of the mix the test fixed.
    """
    strata = [list(after)] if not after or not isinstance(after[0], Sequence) else [list(s) for s in after]  # type: ignore[arg-type]
    if not before or not any(strata):
        raise ValueError("a reduction needs at least one value on each side")
    stat = STATISTICS[statistic]
    reducer = np.median if statistic == "median" else np.mean
    rng = np.random.default_rng(seed)
    a = np.asarray(before, dtype=float)
    boot_a = rng.choice(a, size=(iterations, a.size), replace=True)
    boot_b = np.concatenate(
        [rng.choice(np.asarray(s, dtype=float), size=(iterations, len(s)), replace=True) for s in strata if s], axis=1
    )
    effects = 1.0 - reducer(boot_b, axis=1) / reducer(boot_a, axis=1)
    low, high = np.percentile(effects, [2.5, 97.5])
    b = np.concatenate([np.asarray(s, dtype=float) for s in strata if s])
    return 1.0 - stat(b) / stat(a), float(low), float(high)


@dataclass(frozen=True)
class Verdict:
    metric: str
    threshold: str
    n_before: int
    n_after: int
    effect: float
    ci_low: float
    ci_high: float
    outcome: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_at_least(
    metric: str,
    before: Sequence[float],
    after: Sequence[float] | Sequence[Sequence[float]],
    minimum: float,
    *,
    statistic: str = "median",
    context: str = "",
) -> Verdict:
    """Verdict on ``reduction >= minimum`` (``after`` may be strata, see reduction_ci)."""
    effect, low, high = reduction_ci(before, after, statistic=statistic)
    n_after = sum(len(s) for s in after) if after and isinstance(after[0], Sequence) else len(after)
    outcome = PASSED if low >= minimum else FAILED if high < minimum else INCONCLUSIVE
    words = {
        PASSED: "meets",
        FAILED: "misses",
        INCONCLUSIVE: "INCONCLUSIVE against",
    }[outcome]
    message = (
        f"{metric} = {effect:.1%} (95% CI {low:.1%} .. {high:.1%}, {statistic} of n={n_after} vs n={len(before)}) "
        f"{words} the threshold >= {minimum:.0%}{context}"
    )
    return Verdict(metric, f">= {minimum:g}", len(before), n_after, effect, low, high, outcome, message)

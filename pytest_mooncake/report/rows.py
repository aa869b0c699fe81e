"""The detailed metrics table: rows, their formats, and which verdict judges which row."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mooncake.report.document import mark
from pytest_mooncake.report.model import Pair, read
from pytest_mooncake.results.schema import Op, Statistic, Verdict


@dataclass(frozen=True)
class Row:
    key: str
    path: tuple[str, ...]
    unit: str  # ms, s, req/s, tokens/s, %
    decimals: int
    scale: float = 1.0  # e2e latency is stored in ms and shown in s

    def value(self, stats: Mapping[str, Any]) -> float | None:
        raw = read(stats, self.path)
        return None if raw is None else raw * self.scale

    def format(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.unit == "%":
            return f"{value * 100:.{self.decimals}f}%"
        return f"{value:.{self.decimals}f} {self.unit}"


ROWS: tuple[Row, ...] = (
    Row("ttft_mean", ("ttft_ms", "mean"), "ms", 2),
    Row("ttft_median", ("ttft_ms", "median"), "ms", 2),
    Row("ttft_p90", ("ttft_ms", "p90"), "ms", 2),
    Row("tpot_mean", ("tpot_ms", "mean"), "ms", 2),
    Row("requests_per_s", ("requests_per_s",), "req/s", 2),
    Row("output_tokens_per_s", ("output_tokens_per_s",), "tokens/s", 1),
    Row("e2e_mean", ("e2e_ms", "mean"), "s", 2, scale=0.001),
    Row("hit_rate", ("hit_rate",), "%", 1),
)


def change(row: Row, pair: Pair) -> float | None:
    """Relative change from baseline to cache (-0.67 = 67% lower); None for the hit rate."""
    before, after = row.value(pair.baseline), row.value(pair.hit)
    if row.unit == "%" or before is None or after is None or before == 0:
        return None
    return after / before - 1


def verdict_row(verdict: Verdict) -> str | None:
    """The row whose statistic is the one the verdict judged, so the row's change is the verdict's
    point estimate and sits inside its interval. None when no row holds that statistic: a
    stratum-weighted median (not the pooled median of the rounds' stats), a throughput gain
    (judged on the mean end-to-end latency, not on requests/s), a median TPOT change."""
    if verdict.strata > 1 and verdict.statistic is not Statistic.MEAN:
        return None
    if verdict.metric.startswith("ttft_reduction"):
        return {Statistic.MEDIAN: "ttft_median", Statistic.MEAN: "ttft_mean"}.get(verdict.statistic) if verdict.statistic else None
    if verdict.metric.startswith("tpot_change") and verdict.statistic is Statistic.MEAN:
        return "tpot_mean"
    return None


def judged_change(verdict: Verdict) -> float:
    """The verdict's point estimate as a change from baseline to cache, the table's terms."""
    return _sign(verdict) * verdict.effect


def _sign(verdict: Verdict) -> int:
    # A TTFT reduction of 0.6 is a change of -60% in the table (the control's gain is a TTFT
    # reduction too); gains keep their sign.
    return -1 if verdict.metric.startswith(("ttft_reduction", "control_gain")) else 1


def target(verdict: Verdict) -> str:
    """The threshold in the table's terms: a 60% reduction target reads "<= -60%"."""
    op, value = verdict.rule.op, verdict.rule.value
    if op is Op.WITHIN:
        return f"±{value:.0%}"
    if _sign(verdict) < 0:
        op = {Op.AT_LEAST: Op.AT_MOST, Op.AT_MOST: Op.AT_LEAST}.get(op, op)
    return f"{op} {_sign(verdict) * value:+.0%}"


def interval(verdict: Verdict) -> str:
    """The verdict's 95% confidence interval, as a change."""
    if not (math.isfinite(verdict.ci_low) and math.isfinite(verdict.ci_high)):
        return "-"
    low, high = sorted((_sign(verdict) * verdict.ci_low, _sign(verdict) * verdict.ci_high))
    return f"{low:+.1%} .. {high:+.1%}"


def status(verdict: Verdict | None) -> str:
    if verdict is None:
        return "-"
    return mark(verdict.outcome.value)


def row_verdicts(pair: Pair) -> dict[str, Verdict]:
    return {key: v for v in pair.verdicts if (key := verdict_row(v)) is not None}


def own_row_verdicts(pair: Pair) -> list[Verdict]:
    """The verdicts of a pair's effects whose statistic no row holds: each gets a row of its own."""
    return [v for v in pair.verdicts if v.statistic is not None and verdict_row(v) is None]

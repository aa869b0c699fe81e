"""Comparison rules of named baselines (saved and loaded by the results store, ``pytest_mooncake.results.store``).

``--mooncake-compare=NAME`` prints one line per metric and serving scenario present in both runs;
``--mooncake-compare-fail=ttft_p90:10%,throughput:5%`` also fails the session when a metric
moved the wrong way by more than its allowed percentage.

Every metric is read from the cache-hit round of a serving record (``hit``, or ``with-cache`` in
an A/B record), so a baseline compares like with like: what the cache delivers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mooncake.config.parsing import COMPARE_METRICS
from pytest_mooncake.results.schema import HIT_ROUNDS


@dataclass(frozen=True)
class Metric:
    """One comparable figure of a hit round's statistics."""

    name: str
    path: tuple[str, ...]
    higher_is_better: bool
    unit: str
    help: str

    def read(self, stats: Mapping[str, Any]) -> float | None:
        value: Any = stats
        for key in self.path:
            value = value.get(key) if isinstance(value, Mapping) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def format(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.1%}"
        digits = 2 if self.unit == "req/s" else 1
        return f"{value:.{digits}f} {self.unit}"


# The names are parsing.COMPARE_METRICS (what --mooncake-compare-fail accepts), in its order.
METRICS: dict[str, Metric] = {
    name: Metric(name, *spec)
    for name, spec in zip(COMPARE_METRICS, (
        (("ttft_ms", "mean"), False, "ms", "mean time to first token of the hit round"),
        (("ttft_ms", "p90"), False, "ms", "90th-percentile time to first token"),
        (("ttft_ms", "p99"), False, "ms", "99th-percentile time to first token"),
        (("tpot_ms", "mean"), False, "ms", "mean time per output token after the first"),
        (("e2e_ms", "p90"), False, "ms", "90th-percentile end-to-end request latency"),
        (("requests_per_s",), True, "req/s", "completed requests per second"),
        (("output_tokens_per_s",), True, "tok/s", "generated tokens per second"),
        (("hit_rate",), True, "%", "share of prompt tokens served from cache"),
    ), strict=True)
}
# Printed by --mooncake-compare when no --mooncake-compare-fail rules name the metrics.
DEFAULT_SHOWN = ("ttft_mean", "ttft_p90", "tpot_mean", "throughput")
# Machine fields whose difference makes a comparison measure the hardware, not the change.
MACHINE_FIELDS = ("hostname", "cpus", "gpus", "platform")


@dataclass(frozen=True)
class Comparison:
    """One metric of one scenario, now against the baseline."""

    metric: Metric
    scenario: str
    value: float
    baseline: float
    allowed: float | None  # relative worsening allowed; None when only shown

    @property
    def change(self) -> float:
        """Signed relative change of the value (+0.2 = 20% larger)."""
        return self.value / self.baseline - 1

    @property
    def worse(self) -> float:
        """Relative change in the bad direction (positive = worse)."""
        return -self.change if self.metric.higher_is_better else self.change

    @property
    def regressed(self) -> bool:
        return self.allowed is not None and self.worse > self.allowed

    def line(self) -> str:
        text = (f"{self.metric.name} {self.scenario}: {self.metric.format(self.value)} vs "
                f"{self.metric.format(self.baseline)} baseline ({self.change:+.1%}")
        if self.allowed is None:
            return text + ")"
        sign = -1 if self.metric.higher_is_better else 1
        relation = (">" if sign > 0 else "<") if self.regressed else ("<=" if sign > 0 else ">=")
        limit = f"{sign * self.allowed * 100:+g}%" if sign < 0 else f"{self.allowed * 100:g}%"
        return f"{text} {relation} {limit})"




def hit_stats(document: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(record name, statistics of its cache-hit round) for every serving record that has one."""
    for record in document.get("records", []):
        if record.get("kind") != "serving":
            continue
        rounds = {r.get("round"): r.get("stats") for r in record.get("data", {}).get("rounds", [])}
        stats = next((rounds[name] for name in HIT_ROUNDS if rounds.get(name)), None)
        if stats:
            yield record["name"], stats


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any],
            rules: Mapping[str, float] | None) -> list[Comparison]:
    """Every ruled metric (or the default ones, shown only) of every scenario in both runs."""
    before = dict(hit_stats(baseline))
    names: Mapping[str, float | None] = dict(rules) if rules else dict.fromkeys(DEFAULT_SHOWN)
    found = []
    for scenario, stats in hit_stats(current):
        if scenario not in before:
            continue
        for name, allowed in names.items():
            metric = METRICS[name]
            now, then = metric.read(stats), metric.read(before[scenario])
            if now is not None and then:  # a zero baseline has no relative change
                found.append(Comparison(metric, scenario, now, then, allowed))
    return found


def machine_mismatch(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """``field: now vs baseline`` for each machine field that differs."""
    now, then = current.get("machine", {}), baseline.get("machine", {})
    return [f"{key}: {now.get(key)!r} vs {then.get(key)!r}" for key in MACHINE_FIELDS if now.get(key) != then.get(key)]

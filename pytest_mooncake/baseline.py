"""Named baselines: save a run's results, compare later runs against them.

``--mooncake-save=NAME`` keeps the run's results document as ``<results_dir>/baselines/NAME.json``.
``--mooncake-compare=NAME`` prints one line per metric and serving scenario present in both runs;
``--mooncake-compare-fail=ttft_p90:10%,throughput:5%`` also fails the session when a metric
moved the wrong way by more than its allowed percentage.

Every metric is read from the cache-hit round of a serving record (``hit``, or ``with-cache`` in
an A/B record), so a baseline compares like with like: what the cache delivers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import MooncakeConfig

HIT_ROUNDS = ("hit", "with-cache")


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


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("ttft_mean", ("ttft_ms", "mean"), False, "ms", "mean time to first token of the hit round"),
        Metric("ttft_p90", ("ttft_ms", "p90"), False, "ms", "90th-percentile time to first token"),
        Metric("ttft_p99", ("ttft_ms", "p99"), False, "ms", "99th-percentile time to first token"),
        Metric("tpot_mean", ("tpot_ms", "mean"), False, "ms", "mean time per output token after the first"),
        Metric("e2e_p90", ("e2e_ms", "p90"), False, "ms", "90th-percentile end-to-end request latency"),
        Metric("throughput", ("requests_per_s",), True, "req/s", "completed requests per second"),
        Metric("output_throughput", ("output_tokens_per_s",), True, "tok/s", "generated tokens per second"),
        Metric("hit_rate", ("hit_rate",), True, "%", "share of prompt tokens served from cache"),
    )
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


def baseline_path(results_dir: Path, name: str) -> Path:
    return results_dir / "baselines" / f"{name}.json"


def save(document: Mapping[str, Any], results_dir: Path, name: str) -> Path:
    path = baseline_path(results_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def load(results_dir: Path, name: str) -> dict[str, Any]:
    path = baseline_path(results_dir, name)
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.exists() else []
        raise FileNotFoundError(f"no baseline {name!r} at {path}; saved baselines: {known or 'none'} "
                                "(save one with --mooncake-save=NAME)")
    return dict(json.loads(path.read_text()))


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


def apply(document: Mapping[str, Any], results_dir: Path, config: MooncakeConfig) -> tuple[list[str], bool]:
    """Save and/or compare as the settings ask; (summary lines, whether anything regressed)."""
    lines: list[str] = []
    if config.save:
        lines.append(f"saved as baseline {config.save!r}: {save(document, results_dir, config.save)}")
    if not config.compare:
        return lines, False
    reference = load(results_dir, config.compare)
    lines.append(f"compared with baseline {config.compare!r} ({baseline_path(results_dir, config.compare)}):")
    mismatch = machine_mismatch(document, reference)
    if mismatch:
        lines.append(f"WARNING baseline {config.compare!r} was measured on another machine "
                     f"({'; '.join(mismatch)}): differences may come from the hardware")
    comparisons = compare(document, reference, config.compare_fail)
    if not comparisons:
        lines.append(f"no serving scenario with a hit round appears in both this run and baseline {config.compare!r}")
    lines += [("REGRESSION " if c.regressed else "") + c.line() for c in comparisons]
    regressed = [c for c in comparisons if c.regressed]
    if config.compare_fail and not regressed and comparisons:
        lines.append(f"no regression against baseline {config.compare!r}")
    return lines, bool(regressed)

"""Named baselines: save a run's results, compare later runs against them.

``--mooncake-save=NAME`` keeps the run's results document as ``<results_dir>/baselines/NAME.json``.
``--mooncake-compare=NAME --mooncake-compare-fail=ttft_p90:10%,throughput:5%`` compares every
serving scenario present in both runs and fails the session on a regression larger than the
allowed percentage, one line per metric.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import MooncakeConfig

# metric -> (hit-round statistic path, True when higher is better)
METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "ttft_mean": (("ttft_ms", "mean"), False),
    "ttft_p90": (("ttft_ms", "p90"), False),
    "ttft_p99": (("ttft_ms", "p99"), False),
    "tpot_mean": (("tpot_ms", "mean"), False),
    "e2e_p90": (("e2e_ms", "p90"), False),
    "throughput": (("requests_per_s",), True),
    "output_throughput": (("output_tokens_per_s",), True),
    "hit_rate": (("hit_rate",), True),
}
_RULE = re.compile(r"^(\w+):(\d+(?:\.\d+)?)%$")


@dataclass(frozen=True)
class Regression:
    metric: str
    scenario: str
    value: float
    baseline: float
    change: float  # signed relative change, positive = worse
    allowed: float

    def line(self, name: str) -> str:
        return (f"{self.metric} {self.scenario}: {self.value:.4g} vs {self.baseline:.4g} in baseline {name} "
                f"({self.change:+.1%} worse > {self.allowed:.0%} allowed)")


def parse_rules(text: str) -> dict[str, float]:
    """``ttft_p90:10%,throughput:5%`` -> {"ttft_p90": 0.10, "throughput": 0.05}."""
    rules: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _RULE.match(item)
        if not match or match.group(1) not in METRICS:
            raise ValueError(f"expected METRIC:PERCENT% with METRIC one of {', '.join(METRICS)} (got {item!r})")
        rules[match.group(1)] = float(match.group(2)) / 100
    return rules


def baseline_path(results_dir: Path, name: str) -> Path:
    return results_dir / "baselines" / f"{name}.json"


def save(document: dict[str, Any], results_dir: Path, name: str) -> Path:
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


def _hit_stats(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for record in document.get("records", []):
        if record.get("kind") != "serving":
            continue
        rounds = {r["round"]: r["stats"] for r in record["data"].get("rounds", [])}
        stats = rounds.get("hit") or rounds.get("with-cache")
        if stats:
            yield record["name"], stats


def _value(stats: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = stats
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def compare(current: dict[str, Any], baseline: dict[str, Any], rules: dict[str, float]) -> list[Regression]:
    before = dict(_hit_stats(baseline))
    regressions = []
    for scenario, stats in _hit_stats(current):
        if scenario not in before:
            continue
        for metric, allowed in rules.items():
            path, higher_is_better = METRICS[metric]
            now, then = _value(stats, path), _value(before[scenario], path)
            if now is None or not then:
                continue
            worse = (then - now) / then if higher_is_better else (now - then) / then
            if worse > allowed:
                regressions.append(Regression(metric, scenario, now, then, worse, allowed))
    return regressions


def apply(document: dict[str, Any], results_dir: Path, config: MooncakeConfig) -> tuple[list[str], bool]:
    """Save and/or compare as the settings ask; (summary lines, whether anything regressed)."""
    lines: list[str] = []
    if config.save:
        lines.append(f"saved as baseline {config.save!r}: {save(document, results_dir, config.save)}")
    if not (config.compare and config.compare_fail):
        return lines, False
    regressions = compare(document, load(results_dir, config.compare), dict(config.compare_fail))
    lines += [f"REGRESSION {r.line(config.compare)}" for r in regressions]
    if not regressions:
        lines.append(f"no regression against baseline {config.compare!r}")
    return lines, bool(regressions)

"""PNG charts of the evaluation report (matplotlib, Agg backend: no display needed).

The file names follow guide 001: ``<scenario>_latency.png``, ``<scenario>_throughput.png``,
``overall_improvement.png``; plus the headline comparison bars, ``bandwidth.png`` and the
capacity curves (``capacity_ttft.png``, ``capacity_tpot.png``, ``capacity_goodput.png``), a
trace replay's ``<trace>_replay.png``, ``ttft_breakdown.png`` and ``cache_tiers.png``.
Labels stay in English: CI hosts rarely have CJK fonts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_mooncake.errors import install_extra
from pytest_mooncake.qualify.breakdown import PARTS
from pytest_mooncake.report.model import Capacity, Pair, read


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(f"charts need matplotlib: {install_extra('report')} (or pass --no-charts)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _bars(ax: Any, labels: Sequence[str], series: Mapping[str, Sequence[float]], unit: str) -> None:
    width = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(positions, values, width, label=name)
        ax.bar_label(bars, fmt="%.4g", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=15 if len(labels) > 3 else 0)
    ax.set_ylabel(unit)
    ax.legend(fontsize=8)


def latency(pair: Pair, path: Path) -> Path:
    """TTFT mean/median/p90/p99 of every round of one scenario."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    stats = ("mean", "median", "p90", "p99")
    series = {name: [read(s, ("ttft_ms", stat)) or 0.0 for stat in stats] for name, s in pair.rounds}
    _bars(ax, stats, series, "TTFT (ms)")
    ax.set_title(f"{pair.name}: time to first token per round")
    return _save(fig, path)


def _stacked(ax: Any, rows: Sequence[tuple[str, Mapping[str, float]]], parts: Mapping[str, str]) -> None:
    """One horizontal bar per row, its ``parts`` (key: legend) stacked left to right, first row on top."""
    left = [0.0] * len(rows)
    for part, legend in parts.items():
        widths = [max(values[part], 0.0) for _, values in rows]
        ax.barh([label for label, _ in rows], widths, left=left, label=legend)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()


def breakdown(pairs: Sequence[Pair], path: Path) -> Path:
    """Each round's mean TTFT as stacked parts (``qualify.breakdown.PARTS``), scenario by scenario."""
    plt = _pyplot()
    rows = [(f"{pair.name} {name}", parts) for pair in pairs for name, parts in pair.measured_breakdowns]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(rows)))
    _stacked(ax, rows, {f"{part}_ms": part.replace("_", " ") for part in PARTS})
    ax.set_xlabel("mean TTFT per request (ms)")
    ax.legend(fontsize=8, ncols=len(PARTS))
    ax.set_title("Where the TTFT goes (vLLM's request phases; client hop = client TTFT - server TTFT)")
    return _save(fig, path)


def tiers(pairs: Sequence[Pair], path: Path) -> Path:
    """Each round's prompt tokens by the tier that served them (``qualify.tiers``), scenario by scenario."""
    plt = _pyplot()
    rows = [(f"{pair.name} {name}", {part: 100 * shares[part] for part in ("local", "mooncake", "computed")})
            for pair in pairs for name, shares in pair.measured_tiers]
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.45 * len(rows)))
    _stacked(ax, rows, {"local": "local prefix cache", "mooncake": "Mooncake", "computed": "computed"})
    ax.set_xlabel("share of the round's prompt tokens (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # the bars fill the axes
    ax.set_title("Where each round's prompt tokens came from")
    return _save(fig, path)


def throughput(pair: Pair, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [name for name, _ in pair.rounds]
    values = [read(s, ("requests_per_s",)) or 0.0 for _, s in pair.rounds]
    bars = ax.bar(names, values, color="tab:green")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_ylabel("requests/s")
    ax.set_title(f"{pair.name}: throughput per round")
    return _save(fig, path)


def _before(pairs: Sequence[Pair]) -> str:
    """What the bars before the cache are: a cold round of the same server, or a server without the cache."""
    kinds = {"baseline" if p.is_ab else "cold" for p in pairs}
    return "cold" if kinds == {"cold"} else "baseline" if kinds == {"baseline"} else "cold or baseline"


def comparison(pairs: Sequence[Pair], path: Path, key: tuple[str, ...], unit: str, title: str) -> Path:
    """Before against the cache hit, scenario by scenario, for one statistic."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(pairs)), 4))
    before = _before(pairs)
    series = {
        before: [read(p.baseline, key) or 0.0 for p in pairs],
        "cache hit": [read(p.hit, key) or 0.0 for p in pairs],
    }
    _bars(ax, [p.name for p in pairs], series, unit)
    ax.set_title(f"{title}: {before} vs cache hit")
    return _save(fig, path)


def improvement(pairs: Sequence[Pair], path: Path) -> Path:
    """TTFT reduction and throughput gain of every scenario, in percent."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(pairs)), 4))
    series: dict[str, list[float]] = {"TTFT reduction %": [], "latency speed-up %": []}
    for pair in pairs:
        before, after = read(pair.baseline, ("ttft_ms", "mean")), read(pair.hit, ("ttft_ms", "mean"))
        series["TTFT reduction %"].append(100 * (1 - after / before) if before and after is not None else 0.0)
        before, after = read(pair.baseline, ("requests_per_s",)), read(pair.hit, ("requests_per_s",))
        series["latency speed-up %"].append(100 * (after / before - 1) if before and after is not None else 0.0)
    _bars(ax, [p.name for p in pairs], series, "%")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title("Overall improvement with the cache")
    return _save(fig, path)


def bandwidth(transfers: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """GB/s against block size, one line per level/protocol/operation."""
    plt = _pyplot()
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for data in transfers:
        if isinstance(data.get("block_size"), (int, float)) and isinstance(data.get("gbps"), (int, float)):
            name = f"{data.get('level', '?')} {data.get('protocol', '?')} {data.get('operation', '?')}"
            lines[name].append((float(data["block_size"]), float(data["gbps"])))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("block size (bytes)")
    ax.set_ylabel("GB/s")
    ax.set_title("Transfer bandwidth per block size")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _p90s(capacity: Capacity, metric: str) -> list[tuple[float, float, float, float]]:
    """(rate, p90, low, high) of every step with a finite p90, by rate."""
    points = []
    for step in capacity.steps:
        estimate = step.get(metric) or {}
        value, low, high = (read(estimate, (k,)) for k in ("value", "ci_low", "ci_high"))
        rate = read(step, ("rate",))
        if rate is not None and value is not None and low is not None:
            points.append((rate, value, low, high if high is not None else value))
    return sorted(points)


def _latency_curve(capacities: Sequence[Capacity], path: Path, metric: str, name: str, limit: float | None) -> Path:
    plt = _pyplot()
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    finite = [p[3] for c in capacities for p in _p90s(c, metric)]
    # Steps whose p90 is a failed request (infinite) are drawn as crosses above everything else.
    ceiling = 1.1 * max([*finite, limit or 0.0, 1.0])
    for index, capacity in enumerate(capacities):
        color = f"C{index}"
        points = _p90s(capacity, metric)
        if points:
            rates, values = [p[0] for p in points], [p[1] for p in points]
            errors = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar(rates, values, yerr=errors, marker="o", capsize=3, color=color, label=capacity.topology)
        failed = [read(s, ("rate",)) for s in capacity.steps if (s.get(metric) or {}).get("value", 0.0) is None]
        if failed:
            ax.plot(failed, [ceiling] * len(failed), "x", color=color, markersize=8,
                    label=f"{capacity.topology}: p90 is a failed request")
        if capacity.max_rate is not None:
            ax.axvline(capacity.max_rate, color=color, linestyle=":", linewidth=1.2)
            ax.annotate(f"knee {capacity.max_rate:.3g} req/s", (capacity.max_rate, (limit or ceiling) * 0.5), color=color,
                        fontsize=8, rotation=90, va="center", ha="right")
    if limit is not None:
        ax.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"SLO {limit:.0f} ms")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("offered rate (requests/s, Poisson)")
    ax.set_ylabel(f"{name} p90 (ms), 95% CI")
    ax.set_title(f"{name} p90 against offered rate; dotted: each topology's knee")
    ax.legend(fontsize=8)
    return _save(fig, path)


def capacity_curves(capacities: Sequence[Capacity], directory: Path) -> list[Path]:
    """TTFT p90 (and TPOT p90 when limited) against offered rate with the SLO line and each knee,
    and goodput against offered rate."""
    limits = {c.slo_ttft_ms for c in capacities}
    made = [_latency_curve(capacities, directory / "capacity_ttft.png", "ttft_p90", "TTFT", limits.pop() if len(limits) == 1 else None)]
    tpot = {c.slo_tpot_ms for c in capacities}
    if any(tpot):
        made.append(_latency_curve(capacities, directory / "capacity_tpot.png", "tpot_p90", "TPOT", tpot.pop() if len(tpot) == 1 else None))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for index, capacity in enumerate(capacities):
        points = sorted((read(s, ("rate",)) or 0.0, read(s, ("goodput",)) or 0.0) for s in capacity.steps)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{index}", label=capacity.topology)
    top = max((read(s, ("rate",)) or 0.0 for c in capacities for s in c.steps), default=1.0)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8, label="goodput = offered")
    ax.set_xlabel("offered rate (requests/s, Poisson)")
    ax.set_ylabel("goodput (requests/s meeting the SLO)")
    ax.set_title("Goodput against offered rate")
    ax.legend(fontsize=8)
    made.append(_save(fig, directory / "capacity_goodput.png"))
    return made


def replay(name: str, records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """A trace replay: TTFT at each request's send time, and cached tokens measured against
    what the trace's prefix sharing predicts."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True)
    sent = [read(r, ("scheduled_at_s",)) or 0.0 for r in records]
    top.plot(sent, [1000 * (read(r, ("ttft_s",)) or 0.0) for r in records], ".", markersize=4)
    top.set_ylabel("TTFT (ms)")
    top.set_title(f"{name}: replayed at the trace's timestamps")
    bottom.plot(sent, [read(r, ("cached_tokens",)) or 0.0 for r in records], ".", markersize=4, label="cached, measured")
    bottom.plot(sent, [read(r, ("predicted_cached",)) or 0.0 for r in records], "x", markersize=3, label="predicted")
    bottom.set_xlabel("send time (s)")
    bottom.set_ylabel("cached tokens")
    bottom.legend(fontsize=8)
    return _save(fig, path)

"""The report's cost model follows from measured capacities: servers = offered load / capacity per server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_mooncake.qualify.capacity_search import (
    P90,
    Calibration,
    CapacityResult,
    CapacitySLO,
    Step,
    capacity_gain,
    knee,
)
from pytest_mooncake.results.schema import Outcome, Rule
from pytest_mooncake.results.store import SCHEMA_VERSION
from pytest_mooncake.tools.cli import main

SLO = CapacitySLO(ttft_p90_ms=400.0)


def _steps(curve: dict[float, float]) -> tuple[Step, ...]:
    """Steps whose TTFT p90 follows ``curve`` (rate -> ms), with a +-15% interval."""
    return tuple(Step(rate, 40, 32, 0, P90(ms, ms * 0.85, ms * 1.15, 32), None, goodput=rate, achieved=rate,
                      outcome=Outcome.PASSED, wall_s=5.0) for rate, ms in curve.items())


def _result(topology: str, curve: dict[float, float]) -> CapacityResult:
    steps = _steps(curve)
    rate, low, high, outcome = knee(steps, SLO)
    return CapacityResult(topology, f"http://{topology}/v1", "tiny", "capacity_mix", SLO, Calibration(100.0, None, 150.0, 5),
                          steps, rate, low, high, outcome, "test", 60.0)


def _document(tmp_path: Path) -> tuple[Path, dict[str, CapacityResult]]:
    results = {
        "baseline": _result("baseline", {1.0: 150.0, 2.0: 250.0, 4.0: 900.0, 3.0: 500.0}),
        "prefix-cache": _result("prefix-cache", {4.0: 60.0, 8.0: 120.0, 16.0: 700.0, 11.3: 300.0}),
        "mooncake-store": _result("mooncake-store", {4.0: 80.0, 8.0: 200.0, 16.0: 1500.0}),
    }
    records = []
    for topology, result in results.items():
        verdicts = [] if topology == "baseline" else [capacity_gain(result, results["baseline"], Rule(">=", 0.5)).as_dict()]
        records.append({"kind": "capacity", "name": topology, "data": {**result.as_dict(), "reference": "baseline",
                                                                       "verdicts": verdicts}})
    path = tmp_path / "capacity_run.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "run_id": "pmc-capacity", "records": records}))
    return path, results


def _row(markdown: str, topology: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {topology} | "))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_server_counts_follow_from_the_measured_capacities(tmp_path: Path) -> None:
    path, results = _document(tmp_path)
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out), "--format", "md", "--servers", "10", "--server-cost", "5000",
                 "--store-servers", "2", "--store-server-cost", "3000"]) == 0
    markdown = (out / "report.md").read_text()
    base = results["baseline"].max_rate
    assert base is not None
    load = 10 * base  # the load 10 baseline servers carry at the SLO
    for topology in ("baseline", "prefix-cache", "mooncake-store"):
        result = results[topology]
        assert result.max_rate is not None
        cells = _row(markdown, topology)
        needed = math.ceil(load / result.max_rate - 1e-9)
        assert float(cells[1]) == pytest.approx(result.max_rate, rel=5e-3)
        assert int(cells[3]) == needed
        fewest, most = math.ceil(load / result.ci_high - 1e-9), math.ceil(load / result.ci_low - 1e-9)
        assert cells[4] == f"{fewest} .. {most}"
        assert int(cells[5]) == 10 - needed
        assert cells[6] == f"{(10 - needed) * 5000:,.2f}"
    # Only the store topology pays for store servers: 2 x 3,000 against its savings.
    saved = (10 - math.ceil(load / results["mooncake-store"].max_rate - 1e-9)) * 5000  # type: ignore[operator]
    assert f"| mooncake-store | 2 Mooncake store servers | 6,000.00 | {saved:,.2f} | {saved - 6000:,.2f} |" in markdown
    assert "| prefix-cache | 2 Mooncake store servers" not in markdown
    assert "capacity_gain" in markdown and "Capacity at the SLO" in markdown
    assert (out / "charts" / "capacity_ttft.png").stat().st_size > 0 and (out / "charts" / "capacity_goodput.png").exists()


def test_an_offered_load_sets_the_server_counts(tmp_path: Path) -> None:
    path, results = _document(tmp_path)
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out), "--format", "md", "--offered-load", "100", "--no-charts",
                 "--lang", "zh"]) == 0
    markdown = (out / "report.md").read_text()
    for topology, result in results.items():
        assert int(_row(markdown, topology)[3]) == math.ceil(100 / result.max_rate)  # type: ignore[operator]
    assert "容量" in markdown


def test_a_topology_that_sustains_no_rate_tried_is_stated_not_costed(tmp_path: Path) -> None:
    path, _ = _document(tmp_path)
    document = json.loads(path.read_text())
    slow = _result("pd-store", {1.0: 900.0, 0.5: 700.0})
    document["records"].append({"kind": "capacity", "name": "pd-store", "data": {**slow.as_dict(), "reference": "baseline"}})
    path.write_text(json.dumps(document))
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out), "--format", "md", "--no-charts"]) == 0
    markdown = (out / "report.md").read_text()
    assert "| pd-store |" not in markdown
    assert "[WARNING] pd-store: even the lowest rate tried, 0.5 req/s, misses the SLO" in markdown

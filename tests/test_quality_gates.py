"""Verdicts as Allure 3 quality gates: each threshold gates the end of the interval nearest to it."""

from __future__ import annotations

import math

from pytest_mooncake.report.quality_gates import gate_samples
from pytest_mooncake.results.schema import Outcome, Rule, Verdict


def _verdict(metric: str, op: str, threshold: float, low: float, high: float) -> Verdict:
    return Verdict(metric, None, (low + high) / 2, low, high, 8, 8, Rule(op, threshold), Outcome.INCONCLUSIVE)


def _gates(*verdicts: Verdict) -> dict[str, tuple[object, str, float]]:
    return {s["key"]: (s["value"], s["gate"]["rule"], s["gate"]["value"]) for s in gate_samples("serving x", verdicts)}


def test_each_rule_gates_the_interval_end_that_decides_it() -> None:
    gates = _gates(
        _verdict("ttft_reduction", ">=", 0.6, 0.55, 0.8),
        _verdict("control_gain", "<=", 0.1, -0.02, 0.04),
        _verdict("tpot_change", "within", 0.5, -0.1, 0.2),
    )
    assert gates == {
        "serving x ttft_reduction (low end)": (0.55, "metricMin", 0.6),  # INCONCLUSIVE: the gate fails
        "serving x control_gain (high end)": (0.04, "metricMax", 0.1),
        "serving x tpot_change (low end)": (-0.1, "metricMin", -0.5),
        "serving x tpot_change (high end)": (0.2, "metricMax", 0.5),
    }


def test_an_open_end_has_no_value_so_allure_fails_its_gate() -> None:
    (sample,) = gate_samples("capacity prefix-cache", [_verdict("capacity_gain", "<=", 1, 0.5, math.inf)])
    assert sample["value"] is None and sample["id"] == sample["key"] and sample["start"] == sample["stop"] > 0
    assert gate_samples("serving x", [_verdict("mooncake_served", ">", 0, 0.0, 0.0)]) == []

"""Verdicts as Allure 3 quality gates: each threshold gates the end of the interval nearest to it."""

from __future__ import annotations

from pytest_mooncake.quality_gates import gate_samples


def _gates(*verdicts: dict) -> dict[str, tuple[object, str, float]]:
    return {s["key"]: (s["value"], s["gate"]["rule"], s["gate"]["value"]) for s in gate_samples("serving x", verdicts)}


def test_each_rule_gates_the_interval_end_that_decides_it() -> None:
    gates = _gates(
        {"metric": "ttft_reduction", "threshold": ">= 0.6", "ci_low": 0.55, "ci_high": 0.8},
        {"metric": "control_gain", "threshold": "<= 0.1", "ci_low": -0.02, "ci_high": 0.04},
        {"metric": "tpot_change", "threshold": "within 0.5", "ci_low": -0.1, "ci_high": 0.2},
    )
    assert gates == {
        "serving x ttft_reduction (low end)": (0.55, "metricMin", 0.6),  # INCONCLUSIVE: the gate fails
        "serving x control_gain (high end)": (0.04, "metricMax", 0.1),
        "serving x tpot_change (low end)": (-0.1, "metricMin", -0.5),
        "serving x tpot_change (high end)": (0.2, "metricMax", 0.5),
    }


def test_an_open_end_has_no_value_so_allure_fails_its_gate() -> None:
    (sample,) = gate_samples("capacity prefix-cache", [{"metric": "capacity_gain", "threshold": "<= 1", "ci_high": None}])
    assert sample["value"] is None and sample["id"] == sample["key"] and sample["start"] == sample["stop"] > 0
    assert gate_samples("serving x", [{"metric": "odd", "threshold": "exact"}]) == []

"""Allure: labels from markers, statistics and charts attached, service logs on failure, environment, quality gates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("allure_pytest", reason="allure-pytest is in the report extra")

SUITE = """
import pytest
from pytest_mooncake.results import allure_steps
from pytest_mooncake.results.schema import Outcome, Rule, Verdict

ROUND = {{"n": 2, "ttft_ms": {{"mean": {ttft}, "median": {ttft}, "p90": {ttft}, "p99": {ttft}}}, "requests_per_s": {rps}}}


@pytest.fixture(scope="session", autouse=True)
def fake_master_log(request, tmp_path_factory):
    log = tmp_path_factory.mktemp("master") / "mooncake_master.log"
    log.write_text("I master started\\nE put failed: NO_AVAILABLE_HANDLE\\n")
    allure_steps.register_log(request.config, "mooncake_master", log)


@pytest.mark.high_reuse
def test_high_reuse(mooncake_record):
    allure_steps.label("scenario", "high_reuse")  # as the suites do; the marker names it too
    with allure_steps.step("round cold"):
        pass
    with allure_steps.step("round hit"):
        pass
    cold = {{**ROUND, "ttft_ms": {{k: 1000.0 for k in ("mean", "median", "p90", "p99")}}, "requests_per_s": 1.0}}
    mooncake_record("serving", "high_reuse", {{"scenario": "high_reuse", "rounds": [
        {{"round": "cold", "stats": cold, "records": []}}, {{"round": "hit", "stats": ROUND, "records": [], "breakdown": {{"requests": 2, "ttft_ms": {ttft},
        "queue_ms": 5.0, "prefill_ms": {ttft} - 50, "server_other_ms": 15.0, "client_hop_ms": 30.0, "kv_load_ms": None,
        "kv_loads": 0}}}}],
        "verdicts": [Verdict("ttft_reduction", None, 0.75, 0.7, 0.8, 2, 2, Rule(">=", 0.6), Outcome.PASSED).as_dict()]}})


@pytest.mark.multi_turn
def test_replay(mooncake_record):
    records = [{{"scheduled_at_s": i * 0.5, "ttft_s": 0.1, "cached_tokens": 64 * i, "predicted_cached": 64 * i}} for i in range(4)]
    mooncake_record("replay", "trace.jsonl", {{"summary": "4 requests", "records": records}})


def test_capacity(mooncake_record):
    allure_steps.label("scenario", "capacity")
    for topology, knee in (("baseline", 2.0), ("prefix-cache", 8.0)):
        steps = [{{"rate": rate, "goodput": rate, "ttft_p90": {{"value": 100 * rate / knee, "ci_low": 90 * rate / knee,
                   "ci_high": 110 * rate / knee}}}} for rate in (knee / 2, knee, knee * 2)]
        mooncake_record("capacity", topology, {{"topology": topology, "max_rate": knee, "ci_low": knee * 0.9,
            "ci_high": knee * 1.1, "slo": {{"ttft_p90_ms": 100.0, "text": "TTFT p90 <= 100 ms"}}, "steps": steps,
            "verdicts": [] if topology == "baseline" else [
                Verdict("capacity_gain", None, 3.0, 2.3, 3.9, 3, 3, Rule(">=", 0.5), Outcome.PASSED).as_dict()]}})


@pytest.mark.low_reuse
def test_low_reuse_fails():
    assert False, "planted failure"
"""


def _results(alluredir: Path) -> dict[str, dict]:
    found = {}
    for path in alluredir.glob("*-result.json"):
        result = json.loads(path.read_text())
        found[result["name"]] = result
    return found


def _attachment_names(result: dict) -> list[str]:
    names = [a["name"] for a in result.get("attachments", [])]
    for step in result.get("steps", []):
        names += [a["name"] for a in step.get("attachments", [])]
    return names


def test_allure_results_carry_labels_statistics_charts_and_logs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE.format(ttft=250.0, rps=3.0))
    alluredir = pytester.path / "allure-results"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--alluredir={alluredir}", "--mooncake-profile=cpu-ci")
    result.assert_outcomes(passed=3, failed=1)
    tests = _results(alluredir)

    passed = tests["test_high_reuse"]
    labels = {(label["name"], label["value"]) for label in passed["labels"]}
    assert [label["value"] for label in passed["labels"] if label["name"] == "scenario"] == ["high_reuse"]
    assert ("topology", "spawn/tcp") in labels
    assert ("profile", "cpu-ci") in labels
    assert any(name == "hardware" for name, _ in labels)
    assert [step["name"] for step in passed["steps"]] == ["round cold", "round hit"]
    names = _attachment_names(passed)
    assert "serving high_reuse statistics" in names
    assert {"high_reuse_latency.png", "high_reuse_throughput.png", "high_reuse_ttft_breakdown.png",
            "effective config (redacted)"} <= set(names)
    assert "mooncake_master log" not in names  # logs go with failures only
    stats = next(a for a in passed["attachments"] if a["name"] == "serving high_reuse statistics")
    assert json.loads((alluredir / stats["source"]).read_text())["rounds"][1]["stats"]["ttft_ms"]["mean"] == 250.0

    failed = tests["test_low_reuse_fails"]
    assert ("scenario", "low_reuse") in {(label["name"], label["value"]) for label in failed["labels"]}
    log = next(a for a in failed["attachments"] if a["name"] == "mooncake_master log")
    assert "NO_AVAILABLE_HANDLE" in (alluredir / log["source"]).read_text()

    assert {"replay trace.jsonl statistics", "trace_replay.png"} <= set(_attachment_names(tests["test_replay"]))
    capacity = _attachment_names(tests["test_capacity"])
    assert {"capacity baseline statistics", "capacity prefix-cache statistics", "capacity_ttft.png",
            "capacity_goodput.png"} <= set(capacity)
    # Each verdict becomes a metric sample with its quality-gate rule, for Allure 3.
    gates = {s["key"]: (s["value"], s["gate"]) for s in json.loads((alluredir / "mooncake-perf.json").read_text())}
    assert gates == {"serving high_reuse ttft_reduction (low end)": (0.7, {"rule": "metricMin", "value": 0.6}),
                     "capacity prefix-cache capacity_gain (low end)": (2.3, {"rule": "metricMin", "value": 0.5})}

    environment = (alluredir / "environment.properties").read_text()
    assert "config.profile=cpu-ci" in environment and "hardware=" in environment


def test_without_alluredir_nothing_is_attached(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE.format(ttft=250.0, rps=3.0))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    assert not list(pytester.path.glob("**/*-result.json")) and not list(pytester.path.glob("**/mooncake-perf.json"))

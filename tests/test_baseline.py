"""Named baselines: a planted 20% TTFT regression fails the session with a one-line explanation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mooncake.baseline import METRICS, Comparison, compare, machine_mismatch

RECORDING_TEST = """
def test_record(mooncake_results):
    mooncake_results.add("serving", "high_reuse", {{"rounds": [
        {{"round": "cold", "stats": {{"ttft_ms": {{"mean": 1000.0, "p90": 1100.0}}, "requests_per_s": 1.0}}}},
        {{"round": "hit", "stats": {{"ttft_ms": {{"mean": {mean}, "p90": {p90}}}, "requests_per_s": {rps}}}}},
    ]}})
"""


def _run(pytester: pytest.Pytester, *args: str, mean: float = 80.0, p90: float = 100.0, rps: float = 5.0) -> pytest.RunResult:
    pytester.makepyfile(test_record=RECORDING_TEST.format(mean=mean, p90=p90, rps=rps))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_a_planted_ttft_regression_fails_the_session(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=main", "--mooncake-compare-fail=ttft_p90:10%,throughput:5%", p90=120.0)
    result.assert_outcomes(passed=1)  # the tests pass; the session fails
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "compared with baseline 'main' (*baselines/main.json):",
        "REGRESSION ttft_p90 high_reuse: 120.0 ms vs 100.0 ms baseline (+20.0% > 10%)",
        "throughput high_reuse: 5.00 req/s vs 5.00 req/s baseline (+0.0% >= -5%)",
    ])
    result.stdout.no_fnmatch_line("REGRESSION throughput*")


def test_no_regression_passes_and_prints_each_metric(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=main", "--mooncake-compare-fail=ttft_p90:10%", p90=105.0)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["ttft_p90 high_reuse: 105.0 ms vs 100.0 ms baseline (+5.0% <= 10%)",
                                 "no regression against baseline 'main'"])


def test_compare_without_rules_only_shows(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=main", p90=300.0)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["ttft_p90 high_reuse: 300.0 ms vs 100.0 ms baseline (+200.0%)"])


def test_lower_throughput_is_a_regression(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=main", "--mooncake-compare-fail=throughput:5%", rps=4.0)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["REGRESSION throughput high_reuse: 4.00 req/s vs 5.00 req/s baseline (-20.0% < -5%)"])


def test_another_machine_is_a_warning_not_a_failure(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    saved = pytester.path / ".mooncake-results" / "baselines" / "main.json"
    document = json.loads(saved.read_text())
    document["machine"]["cpus"] = 4096
    saved.write_text(json.dumps(document))
    result = _run(pytester, "--mooncake-compare=main", "--mooncake-compare-fail=ttft_p90:10%")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["WARNING baseline 'main' was measured on another machine (cpus: * vs 4096): *"])


def test_compare_fail_without_a_baseline_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--mooncake-compare-fail=ttft_p90:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs a baseline to compare with*--mooncake-compare=NAME*"])


def test_missing_baseline_lists_saved_ones(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=nightly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no baseline 'nightly' at *; saved baselines: ?'main'?*"])


def test_bad_rule_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--mooncake-compare=x", "--mooncake-compare-fail=ttft:10")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*expected METRIC:PERCENT% with METRIC one of ttft_mean, *(got 'ttft:10')*"])


def test_directions() -> None:
    lower = {name for name, metric in METRICS.items() if not metric.higher_is_better}
    assert lower == {"ttft_mean", "ttft_p90", "ttft_p99", "tpot_mean", "e2e_p90"}
    faster = Comparison(METRICS["throughput"], "s", 6.0, 5.0, 0.05)
    assert faster.worse == pytest.approx(-0.2) and not faster.regressed


def test_ab_records_compare_their_with_cache_round(results_dir: Path) -> None:
    document = json.loads((results_dir / "ab_run.json").read_text())
    slower = json.loads(json.dumps(document))
    for record in slower["records"]:
        for round_ in record["data"].get("rounds", []):
            if round_["round"] == "with-cache":
                round_["stats"]["ttft_ms"]["p90"] *= 1.5
    (found,) = [c for c in compare(slower, document, {"ttft_p90": 0.1}) if c.scenario == "ab_high_reuse"]
    assert found.regressed and found.change == pytest.approx(0.5)
    assert machine_mismatch(document, document) == []


@pytest.fixture
def results_dir() -> Path:
    return Path(__file__).parent / "data" / "results"

"""Named baselines: a planted 20% TTFT regression fails the session with a one-line explanation."""

from __future__ import annotations

import pytest

RECORDING_TEST = """
def test_record(mooncake_results):
    mooncake_results.add("serving", "high_reuse", {{"rounds": [
        {{"round": "cold", "stats": {{"ttft_ms": {{"mean": 1000.0, "p90": 1100.0}}, "requests_per_s": 1.0}}}},
        {{"round": "hit", "stats": {{"ttft_ms": {{"mean": {mean}, "p90": {p90}}}, "requests_per_s": {rps}}}}},
    ]}})
"""


def _run(pytester: pytest.Pytester, *args: str, mean: float = 100.0, p90: float = 120.0, rps: float = 5.0) -> pytest.RunResult:
    pytester.makepyfile(test_record=RECORDING_TEST.format(mean=mean, p90=p90, rps=rps))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_a_planted_ttft_regression_fails_the_session(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=main", "--mooncake-compare-fail=ttft_p90:10%,throughput:5%", p90=144.0)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["REGRESSION ttft_p90 high_reuse: 144 vs 120 in baseline main (+20.0% worse > 10% allowed)"])
    result.stdout.no_fnmatch_line("REGRESSION throughput*")


def test_no_regression_passes(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=main", "--mooncake-compare-fail=ttft_p90:10%", p90=125.0)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["no regression against baseline 'main'"])


def test_lower_throughput_is_a_regression(pytester: pytest.Pytester) -> None:
    _run(pytester, "--mooncake-save=main").assert_outcomes(passed=1)
    result = _run(pytester, "--mooncake-compare=main", "--mooncake-compare-fail=throughput:5%", rps=4.0)
    result.stdout.fnmatch_lines(["REGRESSION throughput high_reuse: 4 vs 5 in baseline main (+20.0% worse > 5% allowed)"])


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

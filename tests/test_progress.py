"""The progress line: done/total, TTFT p50 and errors while a round runs; silent under -q."""

from __future__ import annotations

import pytest

SUITE = """
from pytest_mooncake.qualify.progress import Progress


def test_round(request):
    with Progress(request.config, "high_reuse hit", total=8) as progress:
        for index in range(8):
            progress.update(ttft_s=0.1 * (index + 1), error=index == 7)
"""


def test_progress_lines_in_a_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_round=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["[[]high_reuse hit[]] 2/8 done, TTFT p50 150 ms, 0 errors",
                                 "[[]high_reuse hit[]] 8/8 done, TTFT p50 450 ms, 1 errors"])
    assert result.stdout.str().count("8/8 done") == 1


def test_quiet_under_q(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_round=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
    assert "done, TTFT" not in result.stdout.str()

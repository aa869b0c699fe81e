"""Markers: registered once, safe under --strict-markers, thresholds validated, scenarios selectable."""

from __future__ import annotations

import pytest

from pytest_mooncake.config.markers import CAPABILITIES, PERF_KEYS, SCENARIOS


def test_every_marker_is_registered(pytester: pytest.Pytester) -> None:
    decorators = "\n".join(f"@pytest.mark.{name}" for name in {**SCENARIOS, **CAPABILITIES})
    pytester.makepyfile(
        f"""
        import pytest
        {decorators}
        @pytest.mark.mooncake_perf(ttft_reduction=0.6, tpot_change=0.1)
        def test_marked(): pass
        """.replace("\n        @", "\n@").replace("        def", "def")
    )
    result = pytester.runpytest("--strict-markers", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_markers_show_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*high_reuse: one long shared prefix*", "*mooncake_perf(ttft_reduction=..., *"])


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        ("mooncake_perf(ttft=0.6)", f"*mark.mooncake_perf accepts only: {', '.join(PERF_KEYS)} (got 'ttft')*"),
        ("mooncake_perf(ttft_reduction='60%')", "*mark.mooncake_perf(ttft_reduction='60%') must be a number*"),
        ("mooncake_perf(0.6)", "*takes keyword arguments only*"),
    ],
)
def test_bad_thresholds_are_rejected(pytester: pytest.Pytester, mark: str, message: str) -> None:
    pytester.makepyfile(f"import pytest\n@pytest.mark.{mark}\ndef test_x(): pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_thresholds_merge_closest_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_mooncake.config.markers import thresholds
        pytestmark = pytest.mark.mooncake_perf(ttft_reduction=0.5, tpot_change=0.1)
        @pytest.mark.mooncake_perf(ttft_reduction=0.6)
        def test_x(request):
            assert thresholds(request.node) == {"ttft_reduction": 0.6, "tpot_change": 0.1}
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_scenario_selection_deselects_other_scenarios(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.high_reuse
        def test_high(): pass
        @pytest.mark.low_reuse
        def test_low(): pass
        def test_unmarked(): pass
        """
    )
    result = pytester.runpytest("--mooncake-scenarios=high_reuse", "-v")
    result.assert_outcomes(passed=2, deselected=1)
    result.stdout.fnmatch_lines(["*test_high PASSED*"])
    result.stdout.no_fnmatch_line("*test_low PASSED*")


def test_scenario_selection_from_guide_yaml(pytester: pytest.Pytester) -> None:
    cfg = pytester.makefile(".yaml", cfg="scenarios:\n  - multi_turn_conversation\n")
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.multi_turn
        def test_multi(): pass
        @pytest.mark.high_reuse
        def test_high(): pass
        """
    )
    pytester.runpytest(f"--mooncake-config={cfg}").assert_outcomes(passed=1, deselected=1)


def test_capability_markers_skip_with_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.requires_rdma
        def test_rdma(): pass
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs RDMA: run with --mooncake-protocol=rdma*"])
    # --mooncake-protocol=rdma on a host without a device stops at start-up (tests/test_bad_input.py).


def test_destructive_skips_in_attach_mode() -> None:
    from pytest_mooncake.config.markers import skip_reason

    class Item:
        def get_closest_marker(self, name: str) -> object:
            return object() if name == "destructive" else None

    assert skip_reason(Item(), "tcp", attached=True) == (  # type: ignore[arg-type]
        "destructive (kills or restarts services): runs only on a cluster pytest spawned")
    assert skip_reason(Item(), "tcp", attached=False) is None  # type: ignore[arg-type]

"""Qualification profiles fill in thresholds a test leaves unset; unknown ones are usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mooncake.markers import PERF_KEYS
from pytest_mooncake.profiles import available, load_profile

REPO = Path(__file__).resolve().parent.parent

SUITE = """
import pytest
from pytest_mooncake.markers import thresholds
from pytest_mooncake.profiles import effective_thresholds, profile_thresholds


@pytest.mark.mooncake_perf(ttft_reduction=0.75)
def test_merge(request):
    merged = {**profile_thresholds(request.config), **thresholds(request.node)}
    assert merged == effective_thresholds(request.node)
    print("MERGED", sorted(merged.items()))
"""


def test_bundled_profiles_load_and_use_known_keys() -> None:
    profiles = available(REPO)
    assert {"h100-rdma", "a800-tcp", "cpu-ci"} <= set(profiles)
    for name in profiles:
        profile = load_profile(name, REPO)
        assert profile.description and set(profile.thresholds) <= set(PERF_KEYS)


def test_marker_values_win_over_the_profile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_merge=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--mooncake-profile=h100-rdma")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*('min_gbps', 20.0)*('ttft_reduction', 0.75)*"])


def test_a_profile_file_in_the_project_shadows_and_paths_work(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_merge=SUITE)
    (pytester.path / "ci" / "profiles").mkdir(parents=True)
    (pytester.path / "ci" / "profiles" / "lab.yaml").write_text("description: lab\nthresholds:\n  min_gbps: 3\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--mooncake-profile=lab")
    result.stdout.fnmatch_lines(["*MERGED [[]('min_gbps', 3.0), ('ttft_reduction', 0.75)[]]"])
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", f"--mooncake-profile={pytester.path / 'ci/profiles/lab.yaml'}")
    result.assert_outcomes(passed=1)


def test_unknown_profile_lists_the_available_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_merge=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mooncake-profile=b200")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mooncake-profile: unknown profile 'b200'; available: a800-tcp, cpu-ci, h100-rdma*"])


def test_bad_threshold_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("thresholds:\n  ttft_cut: 0.5\n")
    with pytest.raises(ValueError, match="unknown threshold 'ttft_cut'; accepted: ttft_reduction"):
        load_profile(str(path), tmp_path)

"""Qualification profiles fill in thresholds a test leaves unset; unknown ones are usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mooncake.config.markers import PERF_KEYS
from pytest_mooncake.config.profiles import available, load_profile

REPO = Path(__file__).resolve().parent.parent

SUITE = """
import pytest
from pytest_mooncake.config.markers import thresholds
from pytest_mooncake.config.profiles import effective_thresholds, profile_thresholds


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


# The real transfer suite, run against fakes of what it measures: its checks must read the
# profile's thresholds for the keywords its markers leave unset.
TRANSFER_FAKES = """
import json
from types import SimpleNamespace

import pytest

MiB = 1 << 20


def pytest_addoption(parser):
    parser.addoption("--marker-min-gbps", type=float, help="mark every test mooncake_perf(min_gbps=...)")


def pytest_collection_modifyitems(config, items):
    minimum = config.getoption("--marker-min-gbps")
    for item in items if minimum is not None else ():
        item.add_marker(pytest.mark.mooncake_perf(min_gbps=minimum))


class FakeMaster:
    spawned, protocol, metrics_url = True, "tcp", "http://fake-master:9003"

    def admin(self, path):
        if path == "/metrics":  # an empty pool: the whole capacity is below the eviction watermark
            return SimpleNamespace(status=200, body="master_total_capacity_bytes 134217728\\nmaster_allocated_bytes 0\\n")
        assert path == "/get_segments_detail"
        segment = {"size_bytes": 64 * MiB, "allocator_used_bytes": 0}
        return SimpleNamespace(body=json.dumps({"segments": [segment, segment]}))


class FakeStore:
    def call(self, method, key, count, size):
        assert method == "put_get_throughput"
        return {"put_failures": 0, "exact_reads": count, "put_gbps": 0.4, "get_gbps": 0.5}


@pytest.fixture(scope="session")
def mooncake_master():
    return FakeMaster()


@pytest.fixture(scope="session")
def mooncake_store():
    return FakeStore()
"""
# Appended to the suite's copy, so it replaces the module's own sweep (a module fixture wins
# over a conftest's): 1 GB/s at every size, against the fake store's 0.5 GB/s get.
FAKE_SWEEP = """


@pytest.fixture(scope="module")
def raw_bandwidth():
    return [BenchResult(op, block, 1, 1, 1.0, 10, 1.0) for op in ("read", "write") for block in BLOCK_SIZES]
"""


@pytest.fixture
def transfer_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(TRANSFER_FAKES)
    pytester.makepyfile(test_bandwidth=(REPO / "suites" / "transfer" / "test_bandwidth.py").read_text() + FAKE_SWEEP)
    return pytester


def _profile(pytester: pytest.Pytester, **values: float) -> str:
    path = pytester.path / "lab-profile.yaml"
    path.write_text("description: lab\nthresholds:\n" + "".join(f"  {k}: {v}\n" for k, v in values.items()))
    return f"--mooncake-profile={path}"


def test_transfer_suite_passes_without_a_profile(transfer_suite: pytest.Pytester) -> None:
    result = transfer_suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)  # the RDMA line-rate test skips on TCP


@pytest.mark.parametrize(("threshold", "failing", "message"), [
    ("min_gbps", "test_raw_transfer_bandwidth", "best raw tcp bandwidth 1.00 GB/s < min_gbps 1000000.0"),
    ("store_ratio", "test_store_level_bandwidth_against_raw_and_model_needs",
     "store/raw read below store_ratio 1000000.0*"),
])
def test_a_profile_threshold_fails_the_transfer_suite(transfer_suite: pytest.Pytester, threshold: str,
                                                      failing: str, message: str) -> None:
    result = transfer_suite.runpytest("-p", "no:cacheprovider", _profile(transfer_suite, **{threshold: 1000000}))
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines([f"*_ {failing} _*", f"E * {message}"])


def test_the_marker_wins_over_the_profile_in_the_transfer_suite(transfer_suite: pytest.Pytester) -> None:
    result = transfer_suite.runpytest("-p", "no:cacheprovider", _profile(transfer_suite, min_gbps=1000000),
                                      "--marker-min-gbps=0.5")
    result.assert_outcomes(passed=2, skipped=1)

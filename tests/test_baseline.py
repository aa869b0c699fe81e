"""Named baselines: a planted 20% TTFT regression fails the session with a one-line explanation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_mooncake.results.baseline import DEFAULT_SHOWN, METRICS, Comparison, compare, hit_stats, machine_mismatch
from pytest_mooncake.results.store import SCHEMA_VERSION, Store

RECORDING_TEST = """
def test_record(mooncake_record):
    mooncake_record("serving", "high_reuse", {{"rounds": [
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


def _doc(*records: dict[str, object], machine: dict[str, object] | None = None) -> dict[str, object]:
    return {"schema_version": SCHEMA_VERSION, "records": list(records), **({"machine": machine} if machine is not None else {})}


def _serving(name: str, p90: float, rps: float = 5.0, rounds: tuple[str, ...] = ("cold", "hit")) -> dict[str, object]:
    stats = {"ttft_ms": {"mean": 80.0, "p90": p90}, "tpot_ms": {"mean": 10.0}, "requests_per_s": rps, "hit_rate": 0.5}
    return {"kind": "serving", "name": name, "data": {"rounds": [{"round": r, "stats": stats} for r in rounds]}}


def _config(save: str | None = None, compare: str | None = None, compare_fail: dict[str, float] | None = None) -> Any:
    return SimpleNamespace(save=save, compare=compare, compare_fail=compare_fail)


@pytest.mark.parametrize(
    ("metric", "value", "allowed", "line"),
    [
        ("ttft_p90", 120.0, 0.1, "ttft_p90 s: 120.0 ms vs 100.0 ms baseline (+20.0% > 10%)"),
        ("ttft_p90", 105.0, 0.1, "ttft_p90 s: 105.0 ms vs 100.0 ms baseline (+5.0% <= 10%)"),
        ("throughput", 80.0, 0.05, "throughput s: 80.00 req/s vs 100.00 req/s baseline (-20.0% < -5%)"),
        ("throughput", 99.0, 0.05, "throughput s: 99.00 req/s vs 100.00 req/s baseline (-1.0% >= -5%)"),
        ("hit_rate", 0.5, None, "hit_rate s: 50.0% vs 10000.0% baseline (-99.5%)"),
        ("output_throughput", 50.0, None, "output_throughput s: 50.0 tok/s vs 100.0 tok/s baseline (-50.0%)"),
    ],
)
def test_comparison_lines(metric: str, value: float, allowed: float | None, line: str) -> None:
    assert Comparison(METRICS[metric], "s", value, 100.0, allowed).line() == line


def test_save_creates_the_directory_and_overwrites(tmp_path: Path) -> None:
    results = tmp_path / "not" / "yet"
    document = {"schema_version": SCHEMA_VERSION, "when": tmp_path, "records": []}
    for _ in range(2):
        path = Store(results).save_baseline(document, "main")
    assert path == results / "baselines" / "main.json"
    written = {"schema_version": SCHEMA_VERSION, "when": str(tmp_path), "records": []}
    assert path.read_text() == json.dumps(written, indent=2) + "\n"
    assert Store(results).load_baseline("main") == written


def test_a_missing_baseline_names_what_exists(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as none:
        Store(tmp_path).load_baseline("x")
    assert str(none.value) == (f"no baseline 'x' at {tmp_path / 'baselines' / 'x.json'}; saved baselines: none "
                               "(save one with --mooncake-save=NAME)")
    Store(tmp_path).save_baseline({}, "b")
    Store(tmp_path).save_baseline({}, "a")
    with pytest.raises(FileNotFoundError, match=r"saved baselines: \['a', 'b'\] \(save one"):
        Store(tmp_path).load_baseline("x")


def test_hit_stats_reads_only_serving_records_with_a_hit_round() -> None:
    document = _doc({"kind": "eviction", "name": "e"}, {"kind": "serving", "name": "no-data"},
                    _serving("cold-only", 1.0, rounds=("cold",)), _serving("s", 100.0))
    assert [name for name, _ in hit_stats(document)] == ["s"]
    assert list(hit_stats({})) == []


def test_compare_skips_scenarios_and_zero_baselines_it_cannot_compare() -> None:
    current = _doc(_serving("new", 100.0), _serving("s", 120.0, rps=0.0), _serving("z", 50.0))
    baseline = _doc(_serving("s", 100.0, rps=5.0), _serving("z", 0.0))
    found = [(c.scenario, c.metric.name) for c in compare(current, baseline, {"ttft_p90": 0.1, "throughput": 0.1})]
    assert found == [("s", "ttft_p90"), ("s", "throughput"), ("z", "throughput")], "z's zero p90 baseline has no change"
    shown = compare(current, baseline, None)
    assert [c.metric.name for c in shown if c.scenario == "s"] == list(DEFAULT_SHOWN) and all(c.allowed is None for c in shown)


def test_machine_mismatch_names_each_field() -> None:
    now = {"machine": {"hostname": "a", "cpus": 2, "gpus": [], "platform": "x"}}
    assert machine_mismatch(now, {"machine": {"hostname": "b", "cpus": 2, "gpus": [], "platform": "x"}}) == ["hostname: 'a' vs 'b'"]
    assert machine_mismatch({}, now) == ["hostname: None vs 'a'", "cpus: None vs 2", "gpus: None vs []", "platform: None vs 'x'"]
    assert machine_mismatch(now, {}) == ["hostname: 'a' vs None", "cpus: 2 vs None", "gpus: [] vs None", "platform: 'x' vs None"]


def test_apply_saves_compares_and_says_what_it_found(tmp_path: Path) -> None:
    machine = {"hostname": "a", "cpus": 2}
    store = Store(tmp_path)
    store.save_baseline(_doc(_serving("s", 100.0), machine={"hostname": "b", "cpus": 4}), "main")
    path = tmp_path / "baselines" / "main.json"
    document = _doc(_serving("s", 105.0), machine=machine)
    assert store.apply(document, _config(save="new")) == ([f"saved as baseline 'new': {tmp_path / 'baselines' / 'new.json'}"], False)
    lines, regressed = store.apply(document, _config(compare="main", compare_fail={"ttft_p90": 0.1}))
    assert not regressed and lines == [
        f"compared with baseline 'main' ({path}):",
        "WARNING baseline 'main' was measured on another machine (hostname: 'a' vs 'b'; cpus: 2 vs 4): differences may come from the hardware",
        "ttft_p90 s: 105.0 ms vs 100.0 ms baseline (+5.0% <= 10%)",
        "no regression against baseline 'main'",
    ]
    lines, regressed = store.apply(_doc(_serving("s", 130.0), machine={"hostname": "b", "cpus": 4}), _config(compare="main", compare_fail={"ttft_p90": 0.1}))
    assert regressed and lines[1:] == ["REGRESSION ttft_p90 s: 130.0 ms vs 100.0 ms baseline (+30.0% > 10%)"]
    lines, regressed = store.apply(_doc(_serving("s", 130.0), machine={"hostname": "b", "cpus": 4}), _config(compare="main"))
    assert not regressed and len(lines) == 1 + len(DEFAULT_SHOWN), "shown only: no verdict line without rules"
    lines, regressed = store.apply(_doc(machine={"hostname": "b", "cpus": 4}), _config(compare="main", compare_fail={"ttft_p90": 0.1}))
    assert (lines[1:], regressed) == (["no serving scenario with a hit round appears in both this run and baseline 'main'"], False)

"""The typed results: verdicts round-trip through JSON, round names are an enum, and a results
document of another schema version is refused with one line that says how to fix it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from pytest_mooncake.results.schema import HIT_ROUNDS, Op, Outcome, Round, Rule, Statistic, Verdict, uncredit_unserved
from pytest_mooncake.results.store import SCHEMA_VERSION, Store, load
from pytest_mooncake.tools.cli import main

DATA = Path(__file__).parent / "data" / "results"
JUDGED = Verdict("ttft_reduction", Statistic.MEDIAN, 0.66, 0.61, 0.7, 10, 12, Rule(">=", 0.6), Outcome.PASSED,
                 context=" (a vs b)")


@pytest.mark.parametrize("verdict", [
    JUDGED,
    Verdict("tpot_change", Statistic.MEAN, 0.02, -0.04, 0.09, 8, 8, Rule("within", 0.1), Outcome.PASSED),
    Verdict("control_gain", Statistic.MEDIAN, 0.3, -0.2, 0.5, 8, 8, Rule("<=", 0.1), Outcome.INCONCLUSIVE,
            wording="negative control: gain 30.0% ...; INCONCLUSIVE"),
    Verdict("mooncake_served", None, 0.0, 0.0, 0.0, 8, 8, Rule(">", 0), Outcome.FAILED, wording="NOT SERVED BY MOONCAKE"),
    dataclasses.replace(JUDGED, level=0.99583, looks=3, stop="decided"),
])
def test_a_verdict_round_trips_through_json(verdict: Verdict) -> None:
    written = json.loads(json.dumps(verdict.as_dict()))
    restored = Verdict.from_dict(written)
    assert restored == verdict and restored.message == verdict.message and restored.as_dict() == written
    assert isinstance(restored.outcome, Outcome) and isinstance(restored.rule.op, Op)


def test_the_json_keeps_plain_strings_and_numbers() -> None:
    assert JUDGED.as_dict() == {
        "metric": "ttft_reduction", "statistic": "median", "effect": 0.66, "ci_low": 0.61, "ci_high": 0.7, "n_before": 10,
        "n_after": 12, "op": ">=", "threshold": 0.6, "outcome": "passed", "strata": 1,
        "message": "ttft_reduction = 66.0% (95% CI 61.0% .. 70.0%, median of n=12 vs n=10) meets the threshold >= 60% (a vs b)",
    }
    assert json.dumps(JUDGED.as_dict()["outcome"]) == '"passed"' and f"{Outcome.FAILED}" == str(Outcome.FAILED) == "failed"


def test_an_open_interval_is_null_in_json_and_unbounded_when_read() -> None:
    gain = Verdict("capacity_gain", None, math.inf, 0.2, math.inf, 5, 6, Rule(">=", 0.5), Outcome.PASSED, wording="gain")
    written = gain.as_dict()
    assert (written["effect"], written["ci_high"]) == (None, None)
    restored = Verdict.from_dict(written)
    assert math.isnan(restored.effect) and restored.ci_high == math.inf and restored.ci_low == 0.2
    low_open = Verdict.from_dict({**written, "ci_low": None, "ci_high": 0.4, "threshold": None})
    assert low_open.ci_low == -math.inf and math.isnan(low_open.rule.value)


def test_a_verdict_without_a_message_gets_the_standard_sentence() -> None:
    assert Verdict.from_dict({**JUDGED.as_dict(), "message": ""}).message == JUDGED.message.removesuffix(" (a vs b)")


def test_a_count_above_zero_is_not_met_by_zero() -> None:
    assert (Rule(">", 0).holds(0), Rule(">", 0).holds(1)) == (False, True)


def test_enum_words_format_as_their_values() -> None:
    assert f"[{Outcome.PASSED:>8}] {Round.COLD:<5}|" == "[  passed] cold |"


def test_a_verdict_missing_a_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"^verdict 'ttft_reduction': no 'outcome'; expected the keys Verdict.as_dict "
                                         r"writes: metric, statistic, effect, ci_low, ci_high, n_before, n_after, op, "
                                         r"threshold, outcome, message$"):
        Verdict.from_dict({k: v for k, v in JUDGED.as_dict().items() if k != "outcome"})
    with pytest.raises(ValueError, match=r"^verdict '\?': no 'metric'"):
        Verdict.from_dict({k: v for k, v in JUDGED.as_dict().items() if k != "metric"})
    with pytest.raises(ValueError, match=r"^verdict 'ttft_reduction': 'maybe' is not a valid Outcome"):
        Verdict.from_dict({**JUDGED.as_dict(), "outcome": "maybe"})
    with pytest.raises(ValueError, match=r"threshold = '>= 0.6' is not a number"):
        Verdict.from_dict({**JUDGED.as_dict(), "threshold": ">= 0.6"})


def test_round_names_are_the_strings_the_results_carry() -> None:
    assert [r.value for r in Round] == ["warmup", "cold", "hit", "repeat", "mixed", "turn", "baseline", "with-cache"]
    assert [Round.hit(i) for i in (1, 2, 3)] == ["hit", "hit2", "hit3"] and HIT_ROUNDS == ("hit", "with-cache")
    assert json.dumps({"round": Round.WITH_CACHE}) == '{"round": "with-cache"}'
    rounds = {r["round"] for f in DATA.glob("*.json") for rec in json.loads(f.read_text())["records"]
              for r in rec.get("data", {}).get("rounds", [])}
    assert rounds and rounds <= {r.value for r in Round}


def _versioned(tmp_path: Path, version: object) -> Path:
    document = json.loads((DATA / "reuse_run.json").read_text())
    if version is None:
        del document["schema_version"]
    else:
        document["schema_version"] = version
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(("version", "shown"), [(1, "1"), (None, "none"), ("2", "'2'")])
def test_another_schema_version_is_refused_with_the_fix(tmp_path: Path, version: object, shown: str) -> None:
    path = _versioned(tmp_path, version)
    with pytest.raises(ValueError) as refused:
        load(path)
    assert str(refused.value) == (
        f"{path} has results schema version {shown} (written by pytest-mooncake 0.1.0), this pytest-mooncake reads "
        f"version {SCHEMA_VERSION}: re-run the tests to write it again (a baseline: --mooncake-save=NAME), or read it "
        "with the pytest-mooncake version that wrote it")


def test_the_report_command_prints_the_mismatch_and_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _versioned(tmp_path, 1)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == pytest.ExitCode.USAGE_ERROR
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        f"pytest-mooncake report: {path} has results schema version 1 (written by pytest-mooncake 0.1.0), this "
        f"pytest-mooncake reads version {SCHEMA_VERSION}: re-run the tests to write it again (a baseline: "
        "--mooncake-save=NAME), or read it with the pytest-mooncake version that wrote it"]
    assert not (tmp_path / "out").exists()


def test_a_baseline_of_another_version_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_record="def test_record(mooncake_record):\n    mooncake_record('serving', 'y', {})\n")
    store = Store(pytester.path / ".mooncake-results")
    store.save_baseline({"schema_version": 1, "records": []}, "old")
    result = pytester.runpytest("-p", "no:cacheprovider", "--mooncake-compare=old")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: */baselines/old.json has results schema version 1, this pytest-mooncake reads "
                                 f"version {SCHEMA_VERSION}: re-run the tests to write it again *"])


@pytest.mark.parametrize(("statistic", "strata", "named"), [
    (Statistic.MEDIAN, 2, "stratum-weighted median"), (Statistic.MEDIAN, 1, "median"),
    (Statistic.MEAN, 2, "mean"),  # the stratum-weighted mean is the pooled mean
    (None, 2, None),
])
def test_a_verdict_names_the_statistic_it_judged(statistic: Statistic | None, strata: int, named: str | None) -> None:
    verdict = Verdict("ttft_reduction", statistic, 0.393, 0.375, 0.42, 40, 40, Rule(">=", 0.25), Outcome.PASSED, strata=strata)
    assert verdict.judged_statistic == named
    basis = f", {named} of n=40 vs n=40" if named else ""
    assert verdict.figure == f"39.3% (95% CI 37.5% .. 42.0%{basis})"
    assert verdict.message == f"ttft_reduction = {verdict.figure} meets the threshold >= 25%"
    assert Verdict.from_dict(json.loads(json.dumps(verdict.as_dict()))) == verdict


def test_a_sequential_verdict_writes_its_level_looks_and_stop_and_a_single_one_does_not() -> None:
    sequential = dataclasses.replace(JUDGED, level=0.99583, looks=3, stop="budget exhausted")
    written = sequential.as_dict()
    assert (written["level"], written["looks"], written["stop"]) == (0.99583, 3, "budget exhausted")
    assert not {"level", "looks", "stop"} & set(JUDGED.as_dict())
    single = Verdict.from_dict(JUDGED.as_dict())
    assert (single.level, single.looks, single.stop) == (0.95, 1, "")
    assert "99.6% CI" in sequential.figure and sequential.figure.endswith("; 3 looks, budget exhausted)")
    assert "95% CI" in JUDGED.figure and "look" not in JUDGED.figure


def test_a_file_without_strata_reads_as_one_stratum() -> None:
    written = JUDGED.as_dict()
    del written["strata"]
    assert Verdict.from_dict(written).strata == 1


SERVED_FAILED = Verdict("mooncake_served", None, 0.0, 0.0, 0.0, 8, 8, Rule(">", 0), Outcome.FAILED, wording="NOT SERVED")


def test_a_gain_beside_not_served_fails_and_says_why() -> None:
    tpot = Verdict("tpot_change", Statistic.MEAN, 0.02, -0.04, 0.09, 8, 8, Rule("within", 0.1), Outcome.PASSED)
    unsure = dataclasses.replace(JUDGED, metric="throughput_gain", outcome=Outcome.INCONCLUSIVE)
    served, gain, decoding, speedup = uncredit_unserved([SERVED_FAILED, JUDGED, tpot, unsure])
    assert served is SERVED_FAILED and decoding is tpot  # not a gain: judged as measured
    for before, after in ((JUDGED, gain), (unsure, speedup)):
        assert after.outcome is Outcome.FAILED and (after.effect, after.ci_low, after.ci_high) == (before.effect, before.ci_low, before.ci_high)
        assert after.message == (f"{before.metric} = {before.figure} against the threshold >= 60% (a vs b): NOT CREDITED, Mooncake "
                                 "served none of the hits (mooncake_served failed), so the gain is not Mooncake's")
        assert "meets" not in after.message
    failed = dataclasses.replace(JUDGED, outcome=Outcome.FAILED)
    assert uncredit_unserved([SERVED_FAILED, failed])[1] is failed  # already failed: its own words stay


@pytest.mark.parametrize("served", [dataclasses.replace(SERVED_FAILED, outcome=Outcome.PASSED), None])
def test_gains_stand_when_mooncake_served_them(served: Verdict | None) -> None:
    verdicts = [JUDGED] if served is None else [served, JUDGED]
    assert uncredit_unserved(verdicts) == verdicts and uncredit_unserved(verdicts)[-1].message == JUDGED.message

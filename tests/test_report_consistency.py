"""Every verdict is told the same way everywhere: the terminal summary, the results JSON, the Markdown and
HTML report and Allure show the statistic that was judged with its own interval; nothing unmet reads as met;
the tests that did not pass are listed; a scenario without reuse is no finding; marks need no font."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_mooncake.endpoints.model import DUMMY_MODEL
from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.topology import TOPOLOGIES
from pytest_mooncake.qualify.protocol import RoundResult, ScenarioRun
from pytest_mooncake.qualify.reuse import evaluate
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.report import charts
from pytest_mooncake.report.build import ReportOptions, build
from pytest_mooncake.report.model import load_run, pairs_of
from pytest_mooncake.results.schema import Outcome, Verdict
from pytest_mooncake.serving import RequestRecord

DATA = Path(__file__).parent / "data" / "results"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _record(i: int, round_name: str, ttft: float, cached: int, scenario: str) -> RequestRecord:
    return RequestRecord(
        request_id=f"{scenario}-{round_name}-{i}", scenario=scenario, round=round_name, api="completions",
        run_start_epoch_s=0.0, run_start_monotonic_s=0.0, scheduled_at_s=0.0, sent_at_s=0.0, finished_at_s=ttft + 0.03,
        ttft_s=ttft, itl_s=(0.01,) * 3, tpot_s=0.01, e2e_s=ttft + 0.03, prompt_tokens=1000, completion_tokens=4,
        cached_tokens=cached, content_chunks=4, text="same", error=None,
    )


def _run(scenario: Scenario, hit_ttfts: list[float], topology: str, counters: dict[str, float]) -> ScenarioRun:
    cold = RoundResult("cold", [_record(i, "cold", 1.0 + 0.01 * i, 0, scenario.name) for i in range(scenario.requests)], 8.0)
    reusing = round(scenario.reuse * scenario.requests)
    hit = RoundResult("hit", [_record(i, "hit", t, 896 if i < reusing else 0, scenario.name) for i, t in enumerate(hit_ttfts)],
                      2.0, counters)
    return ScenarioRun(scenario, Endpoint("http://127.0.0.1:1/v1", DUMMY_MODEL, spawned=True, label="vllm"),
                       [cold, hit], True, True, None, TOPOLOGIES[topology])


def _records() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """What the real ``evaluate`` writes for each case, keyed by the test that records it."""
    # 6 of 8 hit requests reuse their document: the pooled median (~0.105 s) is a hit's, the
    # stratum-weighted median is 3/4 of a hit's plus 1/4 of a miss's: two different reductions.
    medium = Scenario("medium_reuse", 8, 900, 100, reuse=0.75)
    stratified = evaluate(_run(medium, [0.1 + 0.001 * i for i in range(6)] + [1.0, 1.01], "prefix-cache", {}),
                          {"ttft_reduction": 0.6}, tokenizer=list)
    high = Scenario("high_reuse", 8, 900, 100, reuse=1.0)
    fast = [0.1 + 0.001 * i for i in range(8)]
    unserved = evaluate(_run(high, fast, "cross-instance", {"external_prefix_cache_hits": 0.0}), {"ttft_reduction": 0.6},
                        tokenizer=list)
    probe = evaluate(_run(high, [0.3, 0.9, 0.35, 0.95, 0.4, 0.85, 0.45, 0.8], "prefix-cache", {}), {"ttft_reduction": 0.1},
                     tokenizer=list).verdicts[0]
    unsure = evaluate(_run(dataclasses.replace(high, name="low_reuse"), [0.3, 0.9, 0.35, 0.95, 0.4, 0.85, 0.45, 0.8], "prefix-cache", {}),
                      {"ttft_reduction": round(probe.effect, 3)}, tokenizer=list)
    cold_start = evaluate(_run(Scenario("cold_start", 8, 0, 1000, reuse=0.0), [0.8 + 0.01 * i for i in range(8)],
                               "prefix-cache", {}), {}, tokenizer=list)
    concurrency = {"writers": [{"ok": 40, "failed": 0}, {"ok": 40, "failed": 0}],
                   "readers_during_writes": [{"exact": 12, "missing": 3}], "final": [{"exact": 20}] * 3}
    return {
        "test_medium_reuse": ("serving", "medium_reuse", stratified.data()),
        "test_not_served": ("serving", "high_reuse", unserved.data()),
        "test_inconclusive": ("serving", "low_reuse", unsure.data()),
        "test_cold_start": ("serving", "cold_start", cold_start.data()),
        "test_trace_replay": ("replay", "trace.jsonl", {"summary": "0 of 4 requests replayed", "records": []}),
        "test_concurrency": ("concurrency", "writers-readers", concurrency),
    }


SUITE = """
import json, pathlib
import pytest

RECORDS = json.loads((pathlib.Path(__file__).parent / "records.json").read_text())


def _add(record, test):
    kind, name, data = RECORDS[test]
    record(kind, name, data)
    problems = [v["message"] for v in data.get("verdicts", []) if v["outcome"] != "passed"]
    if problems:  # as suites/serving/test_reuse.py does
        pytest.fail("\\n".join(problems), pytrace=False)


def test_medium_reuse(mooncake_record):
    _add(mooncake_record, "test_medium_reuse")


def test_not_served(mooncake_record):
    _add(mooncake_record, "test_not_served")


def test_inconclusive(mooncake_record):
    _add(mooncake_record, "test_inconclusive")


def test_cold_start(mooncake_record):
    _add(mooncake_record, "test_cold_start")


def test_trace_replay(mooncake_record):
    _add(mooncake_record, "test_trace_replay")
    assert False, "trace replay: 0 requests replayed"


def test_concurrency(mooncake_record):
    _add(mooncake_record, "test_concurrency")


@pytest.fixture
def broken():
    raise RuntimeError("store node did not start")


def test_errored(broken):
    pass
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One session of the plugin with every case, writing the results file, the report and Allure."""
    pytester_dir = tmp_path_factory.mktemp("consistency")
    (pytester_dir / "records.json").write_text(json.dumps(_records(), default=str))
    (pytester_dir / "test_suite.py").write_text(SUITE)
    alluredir = pytester_dir / "allure-results"
    pytest.importorskip("allure_pytest", reason="allure-pytest is in the report extra")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_suite.py",
         "--mooncake-report=md,html", f"--alluredir={alluredir}", "-o", "addopts="],
        cwd=pytester_dir, capture_output=True, text=True, timeout=300, check=False)
    (document_path,) = (pytester_dir / ".mooncake-results").glob("pmc-*.json")
    (report_dir,) = (pytester_dir / ".mooncake-results").glob("*-report")
    allure_text = "\n".join(p.read_text("utf-8", "replace") for p in alluredir.iterdir() if p.suffix in (".json", ".txt"))
    return {"stdout": result.stdout, "document": json.loads(document_path.read_text()), "md": (report_dir / "report.md").read_text(),
            "html": (report_dir / "report.html").read_text(), "html_path": report_dir / "report.html", "allure": allure_text,
            "alluredir": alluredir, "path": document_path}


def _verdicts(document: dict[str, Any]) -> dict[tuple[str, str], Verdict]:
    return {(r["name"], v["metric"]): Verdict.from_dict(v) for r in document["records"] for v in r["data"].get("verdicts", [])}


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:] if end < 0 else markdown[start:end]


def test_the_session_ran_every_case(run: dict[str, Any]) -> None:
    assert re.search(r"3 failed, 3 passed, 1 error", run["stdout"]), run["stdout"][-3000:]
    outcomes = {t["test"].split("::")[1]: t["outcome"] for t in run["document"]["tests"]}
    assert outcomes == {"test_medium_reuse": "passed", "test_not_served": "failed", "test_inconclusive": "failed",
                        "test_cold_start": "passed", "test_trace_replay": "failed", "test_concurrency": "passed",
                        "test_errored": "error"}


def test_the_judged_statistic_and_interval_read_the_same_everywhere(run: dict[str, Any]) -> None:
    verdicts = _verdicts(run["document"])
    stratified = verdicts[("medium_reuse", "ttft_reduction")]
    assert stratified.strata == 2 and stratified.judged_statistic == "stratum-weighted 20%-trimmed geometric mean"
    assert stratified.ci_low <= stratified.effect <= stratified.ci_high
    pooled = next(r["stats"] for r in next(r for r in run["document"]["records"] if r["name"] == "medium_reuse")["data"]["rounds"]
                  if r["round"] == "hit")["ttft_ms"]["median"]
    cold = next(r["stats"] for r in next(r for r in run["document"]["records"] if r["name"] == "medium_reuse")["data"]["rounds"]
                if r["round"] == "cold")["ttft_ms"]["median"]
    # The pooled median's reduction lies outside the judged interval: showing it beside that interval would lie.
    assert not stratified.ci_low <= 1 - pooled / cold <= stratified.ci_high
    for verdict in verdicts.values():
        shown = verdict.figure if verdict.statistic else verdict.message
        for place in ("stdout", "md", "allure"):
            assert shown in run[place], (place, shown)
        assert html.escape(shown) in run["html"], shown
    # The detail row of the stratified verdict: its own statistic, its point estimate inside its own interval.
    row = next(line for line in run["md"].splitlines() if line.startswith("| ttft_reduction (stratum-weighted 20%-trimmed geometric mean, as judged)"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[3] == f"{-stratified.effect:+.1%}" and cells[4] == f"{-stratified.ci_high:+.1%} .. {-stratified.ci_low:+.1%}"
    # No row of any table shows a change outside the interval beside it.
    for line in run["md"].splitlines():
        match = re.match(r"^\| [^|]+ \| [^|]+ \| [^|]+ \| ([+-]\d+\.\d)% \| ([+-]\d+\.\d)% \.\. ([+-]\d+\.\d)% \|", line)
        if match:
            change, low, high = map(float, match.groups())
            assert low <= change <= high, line
    # Allure's quality gate names the statistic too.
    gates = json.loads((run["alluredir"] / "mooncake-perf.json").read_text())
    assert any(g["title"] == "serving medium_reuse ttft_reduction (stratum-weighted 20%-trimmed geometric mean), 95% CI low end"
               and g["value"] == pytest.approx(stratified.ci_low) for g in gates)


def test_nothing_unmet_is_shown_as_met(run: dict[str, Any]) -> None:
    verdicts = _verdicts(run["document"])
    gain = verdicts[("high_reuse", "ttft_reduction")]
    assert verdicts[("high_reuse", "mooncake_served")].outcome is Outcome.FAILED
    # The gain clears 60% with all its interval, yet Mooncake served none of it: FAILED, in the JSON itself.
    assert gain.ci_low > 0.6 and gain.outcome is Outcome.FAILED and "NOT CREDITED" in gain.message
    assert verdicts[("low_reuse", "ttft_reduction")].outcome is Outcome.INCONCLUSIVE
    unmet = [v for v in verdicts.values() if v.outcome is not Outcome.PASSED]
    for verdict in unmet:
        lines = [line for place in ("stdout", "md") for line in run[place].splitlines() if verdict.message in line]
        assert lines, verdict.message
        for line in lines:
            assert "meets the threshold" not in line and "[PASSED]" not in line, line
    # The details tables of high_reuse and low_reuse: no PASSED mark at all.
    for name in ("high_reuse", "low_reuse"):
        table = run["md"].split(f"### {name} (")[1].split("\n### ")[0]
        assert "[PASSED]" not in table and ("[FAILED]" in table or "[INCONCLUSIVE]" in table)
    speedups = _section(run["md"], "Business value")
    assert "[PASSED] ttft_reduction" not in speedups.split("| high_reuse |")[1].splitlines()[0]
    gates = {g["key"]: g for g in json.loads((run["alluredir"] / "mooncake-perf.json").read_text())}
    assert "serving high_reuse ttft_reduction (low end)" in gates  # the gate fails with the test (allure-render.mjs)
    assert "Recommended" not in run["md"] and "mark-passed\">PASSED</span> Recommended" not in run["html"]


def test_tests_that_did_not_pass_are_listed_in_the_summary(run: dict[str, Any]) -> None:
    summary = _section(run["md"], "Executive summary")
    for test, word in (("test_not_served", "FAILED"), ("test_inconclusive", "FAILED"), ("test_trace_replay", "FAILED"),
                       ("test_errored", "ERROR")):
        line = next(line for line in summary.splitlines() if f"test_suite.py::{test}" in line)
        assert line.startswith(f"- [{word}] "), line
    assert "trace replay: 0 requests replayed" in summary and "records: replay trace.jsonl" in summary
    assert "store node did not start" in summary
    assert "**Tests that did not pass (4 of 7)**" in summary
    # The inconclusive verdict is listed beside the failed ones.
    assert f"[INCONCLUSIVE] low_reuse: {_verdicts(run['document'])[('low_reuse', 'ttft_reduction')].message}" in summary
    # The failed replay is in the summary, not filed among the other measurements.
    others = _section(run["md"], "Other measurements")
    assert "trace.jsonl" not in others
    # The concurrency table holds its data, totalled.
    assert "| writers-readers | ok 80, failed 0 (2 in all) | exact 12, missing 3 (1 in all) | exact 60 (3 in all) |" in others


def test_cold_start_is_no_finding(run: dict[str, Any]) -> None:
    findings = _section(run["md"], "Executive summary").split("### Core findings")[1]
    lines = [line for line in findings.splitlines() if "cold_start" in line]
    assert lines == ["cold_start: no prompt is reused by design, so the cache has nothing to serve; left out of the findings "
                     "and the improvement chart."]


def test_a_cpu_run_of_the_dummy_model_recommends_nothing_about_production(run: dict[str, Any], tmp_path: Path) -> None:
    assert "Deploy: plan the production rollout" not in run["md"]
    document = json.loads((DATA / "reuse_run.json").read_text())  # CPU only, all verdicts passed below
    document["topology"]["mooncake_deployment"] = {"topology": "mooncake-store"}
    for record in document["records"]:
        if record["kind"] == "serving":
            record["data"]["model"] = DUMMY_MODEL
            record["data"]["mooncake"] = {"served": True, "external_hit_tokens": 28672, "stored_keys_cold": 232}
            for verdict in record["data"]["verdicts"]:
                verdict["outcome"] = "passed"
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    loaded = load_run(path)
    built = build([loaded], pairs_of(loaded), ReportOptions(out=tmp_path / "out", formats=("md",), charts=False))
    markdown = built.files[0].read_text()
    assert built.recommendation.outcome == "passed"
    assert (f"**[PASSED] The verdicts pass on a test setup (the random-weight test model {DUMMY_MODEL}, CPU only): "
            "no production recommendation**") in markdown
    assert "Deploy: plan the production rollout" not in markdown and "says nothing about production" in markdown
    assert "Recommended: deploy" not in markdown


def test_the_charts_leave_out_cold_start_and_call_the_cold_round_cold(run: dict[str, Any], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    drawn: dict[str, list[str]] = {}
    improvement, comparison = charts.improvement, charts.comparison

    def spy_improvement(pairs: Any, path: Path) -> Path:
        drawn["improvement"] = [p.name for p in pairs]
        return improvement(pairs, path)

    legends: list[str] = []

    def spy_comparison(pairs: Any, path: Path, *args: Any) -> Path:
        made = comparison(pairs, path, *args)
        legends.append(charts._before(pairs))
        return made

    monkeypatch.setattr(charts, "improvement", spy_improvement)
    monkeypatch.setattr(charts, "comparison", spy_comparison)
    loaded = load_run(run["path"])
    build([loaded], pairs_of(loaded), ReportOptions(out=tmp_path, formats=("md",)))
    assert drawn["improvement"] == ["medium_reuse", "high_reuse", "low_reuse"]
    assert legends == ["cold", "cold"]


_CHECK = r"""<script>
const marks = [...document.querySelectorAll('.mark')].map(e => {
  const s = getComputedStyle(e), r = e.getBoundingClientRect();
  return {kind: e.className, text: e.innerText, bg: s.backgroundColor, w: r.width, h: r.height};
});
const text = document.body.innerText;
document.body.setAttribute('data-check', JSON.stringify({
  marks, pictographs: [...text].filter(c => /\p{Extended_Pictographic}/u.test(c))}));
</script></body>"""


def test_the_html_marks_need_no_font(run: dict[str, Any], tmp_path: Path) -> None:
    """Headless Chromium on this host, which has no emoji font: every mark is a coloured word."""
    if CHROMIUM is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("no chromium: bash scripts/install.sh --with-allure-check")
    page = tmp_path / "report.html"
    page.write_text(run["html"].replace("</body>", _CHECK))
    profile = tmp_path / "profile"
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'data-check="([^"]*)"', out.stdout)
    assert match, f"chromium printed no checked page (rc {out.returncode}): {out.stderr[-2000:]}"
    check = json.loads(html.unescape(match.group(1)))
    assert check["pictographs"] == [], "emoji left in the page: they draw as boxes without an emoji font"
    by_kind: dict[str, set[str]] = {}
    for found in check["marks"]:
        assert re.fullmatch(r"[A-Z ]+", found["text"]) and found["w"] > 0 and found["h"] > 0, found
        by_kind.setdefault(found["kind"], set()).add(found["bg"])
    # Every kind is told apart by its word and its colour, with no glyph outside plain Latin letters.
    assert {"mark mark-passed", "mark mark-failed", "mark mark-inconclusive", "mark mark-error"} <= set(by_kind)
    colours = {kind: bgs.pop() for kind, bgs in by_kind.items() if len(bgs) == 1}
    assert len(colours) == len(by_kind) and len({colours[k] for k in ("mark mark-passed", "mark mark-failed",
                                                                        "mark mark-inconclusive")}) == 3, by_kind


def test_a_teardown_error_and_a_skip_are_the_tests_outcomes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_phases="""
        import pytest

        @pytest.fixture
        def leaky():
            yield
            raise RuntimeError("store node left running")

        def test_teardown_fails(leaky, mooncake_record):
            mooncake_record("transfer", "x", {"gbps": 1.0})

        def test_skipped():
            pytest.skip("no RDMA device")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1, errors=1)
    (path,) = (pytester.path / ".mooncake-results").glob("pmc-*.json")
    tests = {t["test"]: t for t in json.loads(path.read_text())["tests"]}
    assert tests["test_phases.py::test_teardown_fails"] == {"test": "test_phases.py::test_teardown_fails", "outcome": "error",
                                                             "message": "RuntimeError: store node left running"}
    assert tests["test_phases.py::test_skipped"]["outcome"] == "skipped"
    assert "no RDMA device" in tests["test_phases.py::test_skipped"]["message"]


def test_a_failed_test_leaves_the_run_unrecommended_however_its_verdicts_read(tmp_path: Path) -> None:
    document = json.loads((DATA / "reuse_run.json").read_text())
    for record in document["records"]:
        for verdict in record["data"].get("verdicts", []):
            verdict["outcome"] = "passed"
    document["tests"] = [{"test": "suites/serving/test_trace_replay.py::test_replay", "outcome": "failed",
                          "message": "0 requests replayed"}]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    loaded = load_run(path)
    built = build([loaded], pairs_of(loaded), ReportOptions(out=tmp_path / "out", formats=("md",), charts=False))
    markdown = built.files[0].read_text()
    assert built.recommendation.outcome == "failed" and built.recommendation.passed == built.recommendation.total
    assert markdown.count("**[FAILED] Not recommended: 1 tests failed or errored**") == 2  # the summary and the decision
    assert "- [FAILED] suites/serving/test_trace_replay.py::test_replay: 0 requests replayed" in markdown
    assert "verdicts failed." not in markdown

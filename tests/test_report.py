"""The evaluation report: every figure in its tables equals the JSON; the recommendation follows the verdicts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pytest_mooncake.qualify.breakdown import describe
from pytest_mooncake.report.model import Judged, recommend
from pytest_mooncake.report.rows import ROWS
from pytest_mooncake.results.schema import Outcome, Rule, Statistic, Verdict
from pytest_mooncake.results.store import SCHEMA_VERSION
from pytest_mooncake.tools.cli import main

DATA = Path(__file__).parent / "data" / "results"
REAL = Path(__file__).resolve().parent.parent / ".mooncake-results"
_ROW_KEY = {label: key for key, label in (("ttft_mean", "TTFT (mean)"), ("ttft_median", "TTFT (median)"),
                                          ("ttft_p90", "TTFT (P90)"), ("tpot_mean", "TPOT (mean)"),
                                          ("requests_per_s", "Throughput (req/s)"),
                                          ("output_tokens_per_s", "Token throughput"),
                                          ("e2e_mean", "End-to-end latency (mean)"),
                                          ("hit_rate", "Prompt tokens from cache"))}
_NUMBER = re.compile(r"^([+-]?\d+(?:\.\d+)?)(%| ms| s| req/s| tokens/s)$")


def _report(tmp_path: Path, *args: str) -> str:
    assert main(["report", *args, "--out", str(tmp_path), "--format", "md,html"]) == 0
    return (tmp_path / "report.md").read_text()


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """Detailed tables by their heading's first word (the record name)."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("### "):
            heading = line[4:].split(" ")[0]
        elif line.startswith("| ") and heading:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            tables.setdefault(heading, []).append(cells)
    return tables


def _parse(cell: str) -> tuple[float, str]:
    match = _NUMBER.match(cell)
    assert match, f"not a figure: {cell!r}"
    return float(match.group(1)), match.group(2).strip()


def _stats(document: dict, name: str) -> dict[str, dict]:
    record = next(r for r in document["records"] if r["kind"] == "serving" and r["name"] == name)
    return {r["round"]: r["stats"] for r in record["data"]["rounds"]}


def _check_table(rows: list[list[str]], before: dict, after: dict) -> int:
    checked = 0
    for cells in rows[1:]:  # the header; the |---| line is not collected
        if cells[0].endswith(", as judged)"):
            continue  # a verdict's own row (test_report_consistency checks those against the JSON)
        row = next(r for r in ROWS if r.key == _ROW_KEY[cells[0]])
        for cell, stats in ((cells[1], before), (cells[2], after)):
            shown, unit = _parse(cell)
            raw = row.value(stats)
            expected = raw * 100 if unit == "%" else raw
            assert shown == pytest.approx(round(expected, row.decimals), abs=10 ** -row.decimals / 2), (cells, raw)
            checked += 1
        if cells[3] != "-":
            shown, _ = _parse(cells[3])
            assert shown == pytest.approx(round((row.value(after) / row.value(before) - 1) * 100, 1), abs=0.05), cells
            checked += 1
    return checked


def test_seed_numbers_reproduced_from_the_ab_json(tmp_path: Path) -> None:
    markdown = _report(tmp_path, str(DATA / "ab_run.json"), "--server-cost", "5")
    document = json.loads((DATA / "ab_run.json").read_text())
    stats = _stats(document, "ab_high_reuse")
    rows = _tables(markdown)["ab_high_reuse"]
    assert _check_table(rows, stats["baseline"], stats["with-cache"]) == 8 * 2 + 7
    by_metric = {cells[0]: cells for cells in rows}
    assert by_metric["TTFT (mean)"][1:4] == ["1200.00 ms", "400.00 ms", "-66.7%"]
    assert by_metric["Throughput (req/s)"][1:4] == ["2.50 req/s", "7.40 req/s", "+196.0%"]
    assert by_metric["End-to-end latency (mean)"][1:4] == ["12.50 s", "4.32 s", "-65.4%"]
    # The median verdict judges the median row: CI, target and status come from it.
    assert by_metric["TTFT (median)"][4:] == ["-68.8% .. -64.1%", "<= -60%", "[PASSED]"]
    # Rounds sent one at a time: +196% requests/s is a latency speed-up, never a server saving.
    assert "| ab_high_reuse | +196.0% |" in markdown and "Latency speed-up per scenario (concurrency 1)" in markdown
    assert "No capacity search in these results, so no server count" in markdown
    assert "server cost saved" not in markdown and "servers fewer" not in markdown
    # The seed's JSON does not record what served the hits, so it cannot recommend Mooncake itself.
    assert "[PASSED] KV-cache reuse pays off as measured; what served the hits is not recorded" in markdown
    assert "**Verdicts met**: 1/1" in markdown


def test_failed_and_inconclusive_verdicts_are_not_recommended(tmp_path: Path) -> None:
    markdown = _report(tmp_path, str(DATA / "reuse_run.json"))
    document = json.loads((DATA / "reuse_run.json").read_text())
    tables = _tables(markdown)
    for name in ("high_reuse", "medium_reuse", "low_reuse"):
        stats = _stats(document, name)
        assert _check_table(tables[name], stats["cold"], stats["hit"]) >= 16
    medium = {cells[0]: cells for cells in tables["medium_reuse"]}
    assert medium["TTFT (mean)"][4:] == ["-36.2% .. -14.3%", "<= -25%", "[INCONCLUSIVE]"]
    assert "[INCONCLUSIVE] Inconclusive: no recommendation yet" in markdown
    assert "[PASSED] Recommended" not in markdown
    assert "**Verdicts met**: 2/3" in markdown
    # Transfer and store records show in their own tables, with the bandwidth chart.
    assert "| raw-read-1048576 | raw | tcp | read | 1048576 |" in markdown
    assert "| overfill |" in markdown and (tmp_path / "charts" / "bandwidth.png").stat().st_size > 0


def test_guide_002_comparison_of_two_runs(tmp_path: Path) -> None:
    markdown = _report(tmp_path, "--with-cache", str(DATA / "with_cache_mode.json"),
                       "--baseline", str(DATA / "baseline_mode.json"))
    rows = _tables(markdown)["long_context_high_reuse"]
    before = _stats(json.loads((DATA / "baseline_mode.json").read_text()), "long_context_high_reuse")["hit"]
    after = _stats(json.loads((DATA / "with_cache_mode.json").read_text()), "long_context_high_reuse")["hit"]
    assert _check_table(rows, before, after) == (len(rows) - 1) * 2 + sum(cells[3] != "-" for cells in rows[1:]) >= 16
    assert {cells[0]: cells for cells in rows}["TTFT (mean)"][1:3] == ["21180.40 ms", "7123.45 ms"]
    assert "No verdicts recorded" in markdown


def test_html_is_one_self_contained_file(tmp_path: Path) -> None:
    _report(tmp_path, str(DATA / "ab_run.json"), "--lang", "zh")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert "src=\"charts/" not in html and "<td>1200.00 ms</td>" in html
    assert "效果评估报告" in html


def test_real_results_render(tmp_path: Path) -> None:
    """CI runs the suites first; there a missing result is a bug, on a workstation it is a fresh clone."""
    runs = [p for p in sorted(REAL.glob("pmc-*.json")) if '"serving"' in p.read_text()][-1:]
    if not runs:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("no serving results in .mooncake-results: run the suites first")
    markdown = _report(tmp_path, str(runs[0]), "--no-charts")
    tables = _tables(markdown)
    document = json.loads(runs[0].read_text())
    checked = 0
    for record in document["records"]:
        if record["kind"] == "serving" and record["name"] in tables:
            before, after = (r["stats"] for r in record["data"]["rounds"][:2])
            checked += _check_table(tables[record["name"]], before, after)
    assert checked > 0, "no figure of the real results was found in the report"
    # vLLM exports its request-phase histograms: real rounds are split (in some run of the suites:
    # a round can miss its split, e.g. a conversation's), and the report says so.
    def split(doc: dict) -> list[tuple[str, dict]]:
        return [(d["round"], d["breakdown"]) for r in doc["records"] if r["kind"] == "serving"
                for d in r["data"].get("rounds", []) if "requests" in d.get("breakdown", {})]

    assert any(split(json.loads(p.read_text())) for p in REAL.glob("pmc-*.json")), \
        "no serving round of the real results has a TTFT breakdown"
    assert all(describe(name, parts) in markdown for name, parts in split(document))


def test_each_rounds_ttft_breakdown_is_told_and_drawn(tmp_path: Path) -> None:
    document = json.loads((DATA / "reuse_run.json").read_text())
    record = next(r for r in document["records"] if r["name"] == "high_reuse")
    for index, round_data in enumerate(record["data"]["rounds"]):
        round_data["breakdown"] = {"requests": 8, "ttft_ms": 400.0 - 300 * index, "queue_ms": 5.0,
                                   "prefill_ms": 350.0 - 300 * index, "server_other_ms": 15.0, "client_hop_ms": 30.0,
                                   "kv_load_ms": None, "kv_loads": 0}
    source = tmp_path / "run.json"
    source.write_text(json.dumps(document))
    markdown = _report(tmp_path / "out", str(source))
    assert ("TTFT breakdown, mean per request: cold 400 ms = queue 5 + prefill 350 + server other 15 + client hop 30; "
            "hit 100 ms = queue 5 + prefill 50 + server other 15 + client hop 30") in markdown
    assert (tmp_path / "out" / "charts" / "ttft_breakdown.png").stat().st_size > 0
    # Without one, no line and no chart.
    plain = _report(tmp_path / "plain", str(DATA / "reuse_run.json"))
    assert "TTFT breakdown" not in plain and not (tmp_path / "plain" / "charts" / "ttft_breakdown.png").exists()


def test_each_rounds_cache_tiers_are_told_and_drawn(tmp_path: Path) -> None:
    document = json.loads((DATA / "reuse_run.json").read_text())
    record = next(r for r in document["records"] if r["name"] == "high_reuse")
    cold, hit = record["data"]["rounds"][:2]
    cold["tiers"] = {"reason": "the server exports no vllm:prefix_cache_hits"}
    hit["tiers"] = {"prompt_tokens": 4000, "local_tokens": 1000, "mooncake_tokens": 2500, "local": 0.25,
                    "mooncake": 0.625, "computed": 0.125}
    source = tmp_path / "run.json"
    source.write_text(json.dumps(document))
    markdown = _report(tmp_path / "out", str(source))
    assert ("Where the prompt tokens came from, per round: cold: no tier split (the server exports no "
            "vllm:prefix_cache_hits); hit: local 25.0%, Mooncake 62.5%, computed 12.5% of 4,000 prompt tokens") in markdown
    assert (tmp_path / "out" / "charts" / "cache_tiers.png").stat().st_size > 0
    plain = _report(tmp_path / "plain", str(DATA / "reuse_run.json"))
    assert "Where the prompt tokens" not in plain and not (tmp_path / "plain" / "charts" / "cache_tiers.png").exists()


def test_a_replays_tiers_are_told_as_the_terminal_told_them(tmp_path: Path) -> None:
    document = json.loads((DATA / "reuse_run.json").read_text())
    lines = ["local tier: measured 14.7% of prompt tokens, predicted 14.7% (within 1 point)",
             "Mooncake tier: measured 2.4% of prompt tokens, predicted 2.4% (within 1 point)"]
    document["records"].append({"kind": "replay", "name": "conversation_trace.jsonl", "test": "t",
                                "data": {"summary": "195 requests replayed", "tiers": {"compared": True, "lines": lines}}})
    source = tmp_path / "run.json"
    source.write_text(json.dumps(document))
    markdown = _report(tmp_path / "out", str(source), "--no-charts")
    assert all(f"- {line}" in markdown for line in lines)


def test_recommendation_comes_from_the_verdicts() -> None:
    def verdict(outcome: str) -> Judged:
        return Judged("s", Verdict("ttft_reduction", Statistic.MEDIAN, 0.7, 0.6, 0.8, 8, 8, Rule(">=", 0.6), Outcome(outcome)))

    assert recommend([]).outcome == "none"
    assert recommend([verdict("passed"), verdict("passed")]).outcome == "passed"
    assert recommend([verdict("passed"), verdict("inconclusive")]).outcome == "inconclusive"
    assert recommend([verdict("inconclusive"), verdict("failed")]).outcome == "failed"


def test_bad_input_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    assert main(["report", str(bad), "--out", str(tmp_path)]) == 4
    assert "has no 'records'" in capsys.readouterr().err


def test_session_writes_the_report_when_asked(pytester: pytest.Pytester) -> None:
    record = json.loads((DATA / "ab_run.json").read_text())["records"][0]
    (pytester.path / "record.json").write_text(json.dumps(record["data"]))
    pytester.makepyfile(test_record="""
        import json, pathlib

        def test_record(mooncake_record):
            data = json.loads((pathlib.Path(__file__).parent / "record.json").read_text())
            mooncake_record("serving", "ab_high_reuse", data)
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mooncake-report=md", "--mooncake-server-cost=5")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["evaluation report (passed, 1/1 verdicts passed): *-report/report.md"])
    (report,) = (pytester.path / ".mooncake-results").glob("*-report/report.md")
    assert "| ab_high_reuse | +196.0% |" in report.read_text()

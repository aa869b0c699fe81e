"""A report may only claim what the control vouches for: a noisy or contaminated control marks every gain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mooncake.cli import main

DATA = Path(__file__).parent / "data" / "results"


def _with_control(tmp_path: Path, outcome: str, message: str) -> Path:
    document = json.loads((DATA / "reuse_run.json").read_text())
    for record in document["records"]:
        if record["kind"] == "serving" and record["name"] == "low_reuse":
            record["data"]["verdicts"][0].update(outcome=outcome, message=message)
        if record["kind"] == "serving" and record["name"] == "medium_reuse":
            record["data"]["verdicts"][0]["outcome"] = "passed"
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(("outcome", "word"), [("inconclusive", "INCONCLUSIVE"), ("failed", "CONTAMINATED")])
def test_a_control_that_does_not_vouch_marks_the_gains(tmp_path: Path, outcome: str, word: str) -> None:
    message = "negative control: gain 35.8% (95% CI -31.0% .. 54.0%, median of n=8 vs n=8), 0 cached tokens"
    path = _with_control(tmp_path, outcome, message)
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--format", "md"]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert (f"**The gains in this report are not vouched for**: the negative control (low_reuse) is {word}. "
            f"{message}") in markdown
    assert "✅ Recommended" not in markdown


def test_a_clean_control_adds_no_warning(tmp_path: Path) -> None:
    path = _with_control(tmp_path, "passed", "negative control: clean")
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--format", "md"]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "not vouched for" not in markdown and "✅ Recommended" in markdown

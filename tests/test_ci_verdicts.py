"""scripts/ci_verdicts.py: the table of a CI run's verdicts, and its exit status."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ci_verdicts.py"


@pytest.fixture(scope="module")
def script() -> Any:
    spec = importlib.util.spec_from_file_location("ci_verdicts", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _verdict(outcome: str, looks: int, n: int) -> dict[str, Any]:
    return {"metric": "ttft_reduction", "statistic": "median", "effect": 0.7, "ci_low": 0.6, "ci_high": 0.8, "op": ">=",
            "threshold": 0.6, "outcome": outcome, "looks": looks, "stop": "decided", "n_before": n, "n_after": n}


def _results(directory: Path, name: str, *verdicts: dict[str, Any], mtime: float | None = None) -> None:
    path = directory / f"pmc-{name}.json"
    records = [{"kind": "serving", "name": "high_reuse", "test": f"suites/serving/test_reuse.py::test_{name}",
                "data": {"rounds": [{"n": 8}], "verdicts": list(verdicts)}}]
    path.write_text(json.dumps({"topology": {"mooncake_deployment": {"topology": "mooncake-store"}}, "records": records}))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_the_run_s_verdicts_are_listed_with_looks_and_n(script: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "started"
    marker.touch()
    _results(tmp_path, "old", _verdict("inconclusive", 12, 96), mtime=marker.stat().st_mtime - 60)
    _results(tmp_path, "new", _verdict("passed", 3, 24))
    assert script.main([str(tmp_path), "--newer-than", str(marker)]) == 0
    out = capsys.readouterr().out
    assert "| mooncake-store | test_new (high_reuse) | ttft_reduction | passed | 3 | 24 vs 24 | decided |" in out
    assert "test_old" not in out, "results files older than the run's marker are not this run's"
    assert out.splitlines()[-1] == "ci verdicts: 1 decided (0 at the first look), 0 inconclusive"


def test_an_inconclusive_verdict_or_none_at_all_fails(script: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "started"
    marker.touch()
    os.utime(marker, (marker.stat().st_mtime - 60,) * 2)
    assert script.main([str(tmp_path), "--newer-than", str(marker)]) == 1, "a run that judged nothing"
    _results(tmp_path, "a", _verdict("passed", 1, 8), _verdict("inconclusive", 12, 96))
    assert script.main([str(tmp_path), "--newer-than", str(marker)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "ci verdicts: 1 decided (1 at the first look), 1 inconclusive"

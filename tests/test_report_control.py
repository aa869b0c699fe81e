"""A report may only claim what was measured: a control that does not vouch marks every gain, and Mooncake
is recommended only where Mooncake served the hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mooncake.tools.cli import main

DATA = Path(__file__).parent / "data" / "results"


def _with_control(tmp_path: Path, outcome: str, message: str, topology: str | None = None,
                  external_hits: float | None = None) -> Path:
    """reuse_run.json with every verdict passed but the control's, measured on ``topology``."""
    document = json.loads((DATA / "reuse_run.json").read_text())
    # A production-like machine: a CPU-only run recommends nothing about production (test_report_consistency).
    document["machine"]["gpus"] = ["NVIDIA A100-SXM4-80GB, 81920 MiB, 535.154.05"]
    if topology is not None:
        document["topology"]["mooncake_deployment"] = {"topology": topology}
    for record in document["records"]:
        if record["kind"] == "serving" and record["name"] == "low_reuse":
            record["data"]["verdicts"][0].update(outcome=outcome, message=message)
        if record["kind"] == "serving" and record["name"] == "medium_reuse":
            record["data"]["verdicts"][0]["outcome"] = "passed"
        if record["kind"] == "serving" and external_hits is not None and record["name"] != "low_reuse":
            record["data"]["mooncake"] = {"served": external_hits > 0, "external_hit_tokens": external_hits,
                                          "stored_keys_cold": 232}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    return path


def _markdown(tmp_path: Path, path: Path) -> str:
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--format", "md"]) == 0
    return (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(("outcome", "word"), [("inconclusive", "INCONCLUSIVE"), ("failed", "CONTAMINATED")])
def test_a_control_that_does_not_vouch_marks_the_gains(tmp_path: Path, outcome: str, word: str) -> None:
    message = "negative control: gain 35.8% (95% CI -31.0% .. 54.0%, median of n=8 vs n=8), 0 cached tokens"
    markdown = _markdown(tmp_path, _with_control(tmp_path, outcome, message))
    assert (f"**The gains in this report are not vouched for**: the negative control (low_reuse) is {word}. "
            f"{message}") in markdown
    assert "[PASSED] Recommended" not in markdown


def test_a_clean_control_adds_no_warning(tmp_path: Path) -> None:
    markdown = _markdown(tmp_path, _with_control(tmp_path, "passed", "negative control: clean", "mooncake-store", 28672))
    assert "not vouched for" not in markdown and "**[PASSED] Recommended: deploy Mooncake KV Cache**" in markdown


def test_a_mooncake_run_cites_the_external_hits(tmp_path: Path) -> None:
    markdown = _markdown(tmp_path, _with_control(tmp_path, "passed", "clean", "mooncake-store", 28672))
    # high_reuse and medium_reuse each carry 28,672 external-hit tokens and 232 stored keys.
    assert ("Mooncake served the hits: 57,344 prompt tokens came from the store (vllm:external_prefix_cache_hits) "
            "and the cold rounds stored 464 keys (topology mooncake-store).") in markdown


def test_a_prefix_cache_run_does_not_recommend_mooncake(tmp_path: Path) -> None:
    markdown = _markdown(tmp_path, _with_control(tmp_path, "passed", "clean", "prefix-cache"))
    assert "deploy Mooncake" not in markdown
    assert "**[PASSED] KV-cache reuse pays off as measured, but Mooncake was not in the measured path**" in markdown
    assert "The hits came from vLLM's local prefix cache; Mooncake was not in the path" in markdown


def test_a_mooncake_topology_without_external_hits_does_not_recommend_mooncake(tmp_path: Path) -> None:
    markdown = _markdown(tmp_path, _with_control(tmp_path, "passed", "clean", "mooncake-store", 0))
    assert "deploy Mooncake" not in markdown and "but Mooncake served none of the hits" in markdown
    assert "vLLM reported no external prefix-cache hits" in markdown


def test_the_report_puts_the_hit_ttft_beside_the_prediction(tmp_path: Path) -> None:
    path = _with_control(tmp_path, "passed", "clean", "mooncake-store", 28672)
    document = json.loads(path.read_text())
    prediction = {"predicted_ttft_ms": 255.3, "measured_ttft_ms": 104.8, "measured_over_predicted": 0.41,
                  "compute_ms": 60.0, "load_ms": 195.3, "kv_bytes": 14680064, "prompt_tokens": 3712,
                  "cached_tokens": 3584, "read_gbps": 0.08}
    next(r for r in document["records"] if r["name"] == "high_reuse")["data"]["prediction"] = prediction
    path.write_text(json.dumps(document))
    assert ("Hit TTFT (high_reuse) measured 104.8 ms against 255.3 ms by the design's arithmetic (0.41x): recompute "
            "of the uncached tail 60.0 ms + 14,680,064 bytes of KV at the store's measured 0.08 GB/s") in _markdown(tmp_path, path)


def test_the_report_says_why_a_hit_ttft_has_no_prediction(tmp_path: Path) -> None:
    path = _with_control(tmp_path, "passed", "clean", "mooncake-store", 28672)
    document = json.loads(path.read_text())
    next(r for r in document["records"] if r["name"] == "high_reuse")["data"]["no_prediction"] = "attach mode: no shape"
    path.write_text(json.dumps(document))
    assert "Hit TTFT (high_reuse) has no prediction beside it: attach mode: no shape" in _markdown(tmp_path, path)

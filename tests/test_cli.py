"""The pytest-mooncake command, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mooncake.tools.cli import main

from .conftest import REPO

TRACE = REPO / "fixtures" / "traces" / "conversation_trace.jsonl"


def test_simulate_command_writes_table_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", str(TRACE), "--first-n", "500", "--strategies", "random,cache_aware",
                 "--json", str(tmp_path / "sim.json"), "--chart", str(tmp_path / "sim.png")])
    assert code == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "sim.json").read_text())
    assert [r["strategy"] for r in results] == ["random", "cache_aware"]
    for r in results:
        assert r["requests"] == sum(r["node_requests"]) == 500 and r["blocks"] == results[0]["blocks"]
        assert r["hit_ratio"] == (r["local_hit_blocks"] + r["pool_hit_blocks"]) / r["blocks"]
        assert f"| {r['strategy']} | {r['hit_ratio']:.1%} | {r['local_hit_ratio']:.1%} |" in out
    assert (tmp_path / "sim.png").read_bytes().startswith(b"\x89PNG")


def test_unknown_command_is_a_usage_error() -> None:
    assert main(["nonsense"]) == 4  # tests/test_bad_input.py checks its message

"""The pytest-mooncake command, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mooncake.cli import main

from .conftest import REPO

TRACE = REPO / "fixtures" / "traces" / "conversation_trace.jsonl"


def test_simulate_command_writes_table_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", str(TRACE), "--first-n", "500", "--strategies", "random,cache_aware",
                 "--json", str(tmp_path / "sim.json"), "--chart", str(tmp_path / "sim.png")])
    assert code == 0
    assert "cache_aware" in capsys.readouterr().out
    assert "cache_aware" in (tmp_path / "sim.json").read_text()
    json.loads((tmp_path / "sim.json").read_text())
    assert (tmp_path / "sim.png").read_bytes().startswith(b"\x89PNG")


def test_unknown_command_is_a_usage_error() -> None:
    assert main(["nonsense"]) == 2

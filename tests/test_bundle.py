"""The offline bundle: resolution for another Python, pruning, parts no larger than asked."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from pytest_mooncake.tools.bundle import needed, pack, resolve, stack_for, write_manifest


def test_known_stack_for_torch_2_11() -> None:
    assert stack_for("2.11.0")["vllm"] == "0.26.0"
    with pytest.raises(SystemExit, match="no known-good stack for torch 9.9"):
        stack_for("9.9")


def test_host_provided_and_unused_wheels_are_dropped() -> None:
    keep, drop = needed(["torch==2.11.0", "nvidia_cublas_cu13==13.0", "vllm==0.26.0", "flashinfer-python==0.5", "Mistral_Common==1.0", "openai==2.0"])
    assert keep == ["vllm==0.26.0", "openai==2.0"]
    assert set(drop) == {"torch==2.11.0", "nvidia_cublas_cu13==13.0", "flashinfer-python==0.5", "Mistral_Common==1.0"}


def test_parts_respect_the_size_limit_and_manifest_checks_out(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    for index, size in enumerate([700, 500, 300, 300, 100]):
        (house / f"pkg{index}-1.0-py3-none-any.whl").write_bytes(b"x" * size * 1024)
    parts = pack(house, tmp_path / "out", max_part_size=800 * 1024)
    assert sorted(w for part in parts for w in part.wheels) == sorted(p.name for p in house.glob("*.whl"))
    for part in parts:
        with tarfile.open(tmp_path / "out" / part.name) as tar:
            members = tar.getmembers()
        assert sum(m.size for m in members) <= 800 * 1024 or len(members) == 1
    manifest = json.loads(write_manifest(tmp_path / "out", parts, {"torch": "2.11.0"}).read_text())
    assert [p["name"] for p in manifest["parts"]] == [p.name for p in parts]


def test_resolution_for_another_python_uses_the_registry(tmp_path: Path) -> None:
    # The install needs the registry too, so a failure here is a broken resolution, not a missing network.
    assert resolve(["idna==3.7"], "3.12", tmp_path) == ["idna==3.7"]

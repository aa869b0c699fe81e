"""Locating the executables shipped in the Mooncake wheels."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from pytest_mooncake.errors import BinaryNotFound

# How to put etcd (which --mooncake-ha-masters spawns) on $PATH.
ETCD_FIX = "apt-get install etcd-server (Debian/Ubuntu) or put an etcd release binary on $PATH"


def _wheel_dirs() -> list[Path]:
    spec = importlib.util.find_spec("mooncake")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def find_binary(name: str, explicit: Path | None, option: str) -> Path:
    """The binary itself, never the wheel's console-script wrapper.

    The wrapper of transfer_engine_bench runs the binary with subprocess.call,
    so stopping the wrapper's PID would leave the binary running.
    """
    if explicit is not None:
        if explicit.is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise BinaryNotFound(name, [f"{explicit} (from {option}): missing or not executable"], option)
    checked: list[str] = []
    for directory in _wheel_dirs():
        candidate = directory / name
        checked.append(str(candidate))
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if not checked:
        checked.append("the mooncake package (not importable)")
    on_path = shutil.which(name)
    checked.append(f"$PATH ({name})")
    if on_path:
        return Path(on_path)
    raise BinaryNotFound(name, checked, option)

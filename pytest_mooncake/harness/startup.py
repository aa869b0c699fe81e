"""What the settings ask of this host, checked at start-up: a bad input stops the run with one
message and exit code 4 before anything is spawned, not minutes later in a fixture's traceback.

``options`` checks the settings against each other; these checks look at the host (files,
binaries, devices) and at the collected tests, so they run at session start and after collection.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_mooncake.config.markers import gpu_present, rdma_devices
from pytest_mooncake.errors import INSTALL_MOONCAKE, BinaryNotFound

if TYPE_CHECKING:
    from pytest_mooncake.config.options import MooncakeConfig

# Set on the functions of the master fixtures the factories make: "spawn", "attach" or "auto".
MASTER_MODE = "pytest_mooncake_master_mode"
# Set on the factories' fixtures that ask for a master by name at run time (request.getfixturevalue,
# so pytest's closure lacks it): (the master fixture's name, whether it is asked for, given the settings).
USES_MASTER = "pytest_mooncake_uses_master"
_TRACE_FORM = ('expected a Mooncake JSONL trace: one {"timestamp", "input_length", "output_length", "hash_ids"} '
               "object a line (pytest-mooncake simulate FILE checks one)")


def check_host(settings: MooncakeConfig) -> None:
    """UsageError on the first setting this host cannot honour."""
    _check_trace(settings)
    _check_topology(settings)
    _check_rdma(settings)
    _check_binaries(settings)


def _where(settings: MooncakeConfig, name: str) -> str:
    return f"mooncake_{name} = {str(getattr(settings, name))!r} (from {settings.sources[name]})"


def _check_trace(settings: MooncakeConfig) -> None:
    from pytest_mooncake.qualify.traces import TraceFormatError, load_trace

    if settings.trace is None:
        return
    try:
        records = load_trace(settings.trace, first_n=settings.trace_requests)
    except OSError as exc:
        raise pytest.UsageError(f"{_where(settings, 'trace')}: cannot read it ({exc.strerror}); {_TRACE_FORM}") from None
    except (TraceFormatError, UnicodeDecodeError) as exc:
        raise pytest.UsageError(f"{_where(settings, 'trace')}: {exc}; {_TRACE_FORM}") from None
    if not records:
        raise pytest.UsageError(f"{_where(settings, 'trace')}: the file holds no requests; {_TRACE_FORM}")


def _check_topology(settings: MooncakeConfig) -> None:
    from pytest_mooncake.endpoints.topology import TOPOLOGIES

    topology = TOPOLOGIES[settings.topology]
    if topology.gpu_only and settings.openai_base_url is None and not gpu_present():
        runnable = ", ".join(name for name, t in TOPOLOGIES.items() if not t.gpu_only)
        raise pytest.UsageError(
            f"{_where(settings, 'topology')}: cannot be spawned on this host, which has no CUDA GPU (nvidia-smi or "
            f"/dev/nvidia0 not found): {topology.gpu_only}. Fix: run on a GPU host, attach a deployment with "
            f"--mooncake-openai-base-url=URL, or pick a topology that runs on CPU: {runnable}."
        )


def _check_rdma(settings: MooncakeConfig) -> None:
    if settings.protocol != "rdma":
        return
    if importlib.util.find_spec("pyverbs") is None:
        raise pytest.UsageError(
            f"{_where(settings, 'protocol')}: cannot check this host for an RDMA device, since pyverbs (rdma-core's "
            f"Python bindings) is not importable by {sys.executable}. Fix: install it (Debian/Ubuntu: apt-get install "
            "python3-pyverbs, seen by a venv made with --system-site-packages), or use --mooncake-protocol=tcp."
        )
    found = rdma_devices()
    if not found:
        raise pytest.UsageError(
            f"{_where(settings, 'protocol')}: pyverbs finds no RDMA device on this host, so Mooncake would fall back "
            "to TCP and report TCP numbers as RDMA. Fix: run on a host with an RDMA NIC (ibv_devices lists it), "
            "or use --mooncake-protocol=tcp."
        )
    named = filter(None, (part.strip() for part in settings.rdma_devices.split(",")))
    missing = [name for name in named if name not in found]
    if missing:
        raise pytest.UsageError(
            f"{_where(settings, 'rdma_devices')}: pyverbs finds no {', '.join(missing)} on this host; "
            f"it finds {', '.join(found)}. Fix: name devices of this host, or leave it empty for auto-discovery."
        )


def _check_binaries(settings: MooncakeConfig) -> None:
    from pytest_mooncake.runtime.binaries import ETCD_FIX

    explicit = [("master_bin", "mooncake_master")] if not settings.attach else []
    for name, binary in [*explicit, ("bench_bin", "transfer_engine_bench")]:
        path: Path | None = getattr(settings, name)
        if path is not None and not (path.is_file() and os.access(path, os.X_OK)):
            raise pytest.UsageError(
                f"{_where(settings, name)}: no executable file there. Fix: give the path of {binary} (the Mooncake "
                f"wheel ships it: {INSTALL_MOONCAKE}), or drop the option to use the wheel's."
            )
    if settings.ha_masters and not settings.attach and shutil.which("etcd") is None:
        raise pytest.UsageError(
            f"{_where(settings, 'ha_masters')}: the masters elect their leader through an etcd we spawn, and there "
            f"is no etcd on $PATH. Fix: {ETCD_FIX}, or use --mooncake-ha-masters=0."
        )


def check_spawnable(items: list[pytest.Item], settings: MooncakeConfig) -> None:
    """UsageError, once, when collected tests would spawn a master this host has no binary for
    (the base wheel without the [mooncake] extra): not one setup error per test."""
    from pytest_mooncake.runtime.binaries import find_binary

    spawning = [item for item in items if _spawns_master(item, settings)]
    if not spawning:
        return
    try:
        find_binary("mooncake_master", settings.master_bin, "--mooncake-master-bin")
    except BinaryNotFound as exc:
        raise pytest.UsageError(
            f"mooncake_master not found (checked {', '.join(exc.checked)}), and {len(spawning)} collected "
            f"{'test spawns' if len(spawning) == 1 else 'tests spawn'} a Mooncake cluster (e.g. {spawning[0].nodeid}). "
            f"Fix: {INSTALL_MOONCAKE}; or give --mooncake-master-bin=PATH; or attach to a running cluster with "
            "--mooncake-master=HOST:PORT."
        ) from None


def _spawns_master(item: pytest.Item, settings: MooncakeConfig) -> bool:
    from pytest_mooncake.harness.pytest_private import definitions_of, fixture_definitions

    pending = fixture_definitions(item)
    seen: set[int] = set()
    while pending:
        for definition in pending.pop():
            if id(definition) in seen:
                continue
            seen.add(id(definition))
            mode = getattr(definition.func, MASTER_MODE, None)
            if mode == "spawn" or (mode == "auto" and not settings.attach):
                return True
            uses: tuple[str, Callable[[MooncakeConfig], bool]] | None = getattr(definition.func, USES_MASTER, None)
            if uses is not None and uses[1](settings):
                pending.append(definitions_of(item, uses[0]))
    return False

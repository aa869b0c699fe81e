"""The real ``transfer_engine_bench``: a target and an initiator, in the cluster's namespace.

We run the binary itself (the wheel's console script wraps it with subprocess.call, so its
PID is not the binary's), always pass ``--metadata_server`` and ``--segment_id`` (their
defaults are someone's LAN addresses), and keep threads x batch within the TCP transport's
per-peer queue (1024): the default 12 threads x 128 fail on small hosts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pytest_mooncake.cluster.nodes import MasterHandle
from pytest_mooncake.errors import MooncakeError
from pytest_mooncake.runtime.executor import ServiceProcess, read_tail
from pytest_mooncake.runtime.janitor import Janitor
from pytest_mooncake.runtime.probes import LogBannerProbe

__all__ = ["BenchResult", "line_rate_gbps"]

RESULT = re.compile(r"Test completed: duration ([\d.]+), batch count (\d+), throughput ([\d.]+) (\S+)/s")
_UNITS = {"GB": 1e9, "GiB": 2**30, "Gb": 1e9 / 8, "MB": 1e6, "MiB": 2**20, "Mb": 1e6 / 8, "KB": 1e3, "KiB": 2**10, "Kb": 1e3 / 8}
TARGET_NAME = "127.0.0.1:12345"


@dataclass(frozen=True)
class BenchResult:
    operation: str
    block_size: int
    batch_size: int
    threads: int
    duration_s: float
    batches: int
    gbps: float  # 10^9 bytes per second


def parse_result(text: str) -> tuple[float, int, float]:
    """(duration s, batch count, bytes/s) from the initiator's output; ValueError if absent."""
    match = RESULT.search(text)
    if not match:
        raise ValueError("no 'Test completed: ...' line")
    duration, batches, value, unit = match.groups()
    if unit not in _UNITS:
        raise ValueError(f"unknown throughput unit {unit!r}")
    return float(duration), int(batches), float(value) * _UNITS[unit]


def protocol_flags(protocol: str, rdma_devices: str) -> list[str]:
    """The bench's transport flags: its --device_name default (mlx5_2) is someone's NIC,
    so RDMA runs name the devices or let the engine discover them."""
    flags = [f"--protocol={protocol}"]
    if protocol == "rdma":
        flags.append(f"--device_name={rdma_devices}" if rdma_devices else "--auto_discovery=true")
    return flags


def line_rate_gbps(devices: list[str], sysfs: Path = Path("/sys/class/infiniband")) -> float:
    """Line rate of RDMA ``devices`` in GB/s: each device's fastest port, summed.

    sysfs gives a port's rate as e.g. ``200 Gb/sec (4X HDR)``.
    """
    total = 0.0
    for device in devices:
        rates = [float(match.group(1)) for rate in sorted((sysfs / device / "ports").glob("*/rate"))
                 if (match := re.match(r"\s*([\d.]+) Gb/sec", rate.read_text()))]
        if not rates:
            raise MooncakeError(f"no port rate for RDMA device {device!r} under {sysfs / device / 'ports'}; "
                                "check the device name (ibv_devices) and that its ports are up (ibstat)")
        total += max(rates) / 8
    return total


def start_target(master: MasterHandle, binary: Path, workdir: Path, janitor: Janitor, *, buffer_size: int, timeout: float,
                 rdma_devices: str = "") -> ServiceProcess:
    log = workdir / "transfer_engine_bench-target.log"
    target = ServiceProcess(
        "transfer_engine_bench target",
        [str(binary), "--mode=target", *protocol_flags(master.protocol, rdma_devices),
         f"--metadata_server={master.metadata_url}", f"--local_server_name={TARGET_NAME}", f"--buffer_size={buffer_size}"],
        LogBannerProbe(log, r"(DRAM|VRAM) is used"),
        log,
        timeout=timeout,
        env={"MC_TCP_BIND_ADDRESS": "127.0.0.1"},
        netns=master.netns,
        janitor=janitor,
    )
    return target.start()


def run_initiator(
    master: MasterHandle, binary: Path, workdir: Path, *, operation: str, block_size: int, batch_size: int = 64,
    threads: int = 1, duration: float = 2.0, buffer_size: int, port: int, rdma_devices: str = "",
) -> BenchResult:
    """One initiator run to completion (bounded by a timeout that kills its process group)."""
    command = [str(binary), "--mode=initiator", *protocol_flags(master.protocol, rdma_devices),
               f"--metadata_server={master.metadata_url}",
               f"--local_server_name=127.0.0.1:{port}", f"--segment_id={TARGET_NAME}", f"--operation={operation}",
               f"--block_size={block_size}", f"--batch_size={batch_size}", f"--threads={threads}",
               f"--duration={duration:g}", f"--buffer_size={buffer_size}"]
    if master.netns is not None:
        command = master.netns.wrap(command)
    log = workdir / f"initiator-{operation}-{block_size}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "MC_TCP_BIND_ADDRESS": "127.0.0.1"})
        try:
            code = process.wait(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise MooncakeError(f"transfer_engine_bench initiator did not finish in {duration + 60:g} s; log {log}:\n{read_tail(log)}") from None
    text = log.read_text("utf-8", "replace")
    if code != 0 or "FAILED" in text:
        raise MooncakeError(
            f"transfer_engine_bench {operation} {block_size} B failed (exit {code}); log {log}:\n{read_tail(log, 20)}\n"
            "Fix: keep threads x batch_size within MC_TCP_MAX_QUEUED_TRANSFERS_PER_PEER (1024) and the buffer "
            ">= block_size x batch_size x threads."
        )
    duration_s, batches, rate = parse_result(text)
    return BenchResult(operation, block_size, batch_size, threads, duration_s, batches, rate / 1e9)

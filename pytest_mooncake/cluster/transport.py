"""The transport a Mooncake Transfer Engine really chose.

Asked for RDMA on a host where no device opens, the engine logs it ("No RDMA devices found",
"Falling back to TCP mode") and carries on over TCP: the run would then report TCP numbers
under protocol=rdma. Every process we start with protocol=rdma has its log read for that.
"""

from __future__ import annotations

from pathlib import Path

from pytest_mooncake.errors import MooncakeError

# What the Transfer Engine logs when it falls back (strings of mooncake's engine.so).
FALLBACK_SIGNS = ("No RDMA devices found", "no RDMA devices found", "Falling back to TCP mode")


class TransportFallback(MooncakeError):
    """A Transfer Engine asked for RDMA that runs over TCP."""


def tcp_fallback(log_text: str) -> str | None:
    """The log line that says the engine fell back to TCP, or None."""
    for line in log_text.splitlines():
        if any(sign in line for sign in FALLBACK_SIGNS):
            return line.strip()
    return None


def check_transport(protocol: str, log_path: Path, who: str) -> None:
    """Raise TransportFallback when ``who`` was asked for RDMA and its log says it fell back to TCP."""
    if protocol != "rdma" or not log_path.is_file():
        return
    line = tcp_fallback(log_path.read_text("utf-8", "replace"))
    if line is not None:
        raise TransportFallback(
            f"{who} was started with protocol=rdma, but its Transfer Engine fell back to TCP ({log_path}: {line!r}); "
            "whatever it measured would be a TCP number reported as RDMA. Fix: check the RDMA devices "
            "(ibv_devices; --mooncake-rdma-devices names them) or run with --mooncake-protocol=tcp."
        )

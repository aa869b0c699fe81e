"""The one registry of markers, and the checks that run on them."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

__all__ = ["SCENARIOS", "check_perf_markers", "rdma_devices"]

SCENARIOS = {
    "high_reuse": "one long shared prefix, >= 90% of prompt tokens reusable",
    "medium_reuse": "about half of the requests share prefixes",
    "low_reuse": "unique prompts; the negative control (no gain expected)",
    "long_context": "prompts of 8k-128k tokens, capped by the server's max model length",
    "multi_turn": "a conversation whose history grows every turn (~85% reuse)",
    "cold_start": "first requests against an empty cache",
    "long_context_high_reuse": "long shared documents asked many questions",
    "working_set": "shared documents whose KV outgrows an instance's own cache, revisited: Mooncake's tier beyond it",
}
# The guides' names for our scenarios, accepted wherever scenarios are named.
SCENARIO_ALIASES = {"multi_turn_conversation": "multi_turn"}
CAPABILITIES = {
    "requires_rdma": "needs an RDMA device (pyverbs) and --mooncake-protocol=rdma",
    "requires_gpu": "needs a CUDA GPU",
    "requires_serving": "needs an OpenAI-compatible endpoint (attached, or vLLM to spawn)",
    "destructive": "kills or restarts services; runs only on clusters pytest spawned",
    "evicts": "fills the store past its capacity, so Mooncake evicts keys of every tenant; "
    "on an attached cluster it runs only with --mooncake-allow-eviction",
}
PERF_MARKER = "mooncake_perf"
# Threshold keyword -> meaning. Suites compare ratios measured in the same run.
PERF_KEYS = {
    "ttft_reduction": "minimum TTFT reduction of hits vs cold, e.g. 0.60",
    "throughput_gain": "minimum relative request-throughput gain, e.g. 1.5",
    "tpot_change": "largest allowed relative TPOT change either way, e.g. 0.10",
    "ttft_p90_ms": "p90 TTFT SLO in milliseconds",
    "control_gain": "largest gain the low-reuse negative control may show, e.g. 0.10",
    "min_gbps": "minimum transfer bandwidth in GB/s",
    "store_ratio": "minimum store-level / raw transfer bandwidth ratio",
    "need_ratio": "minimum measured bandwidth / the model's break-even bandwidth",
    "match_tokens": "leading tokens a cache-hit response must share with the cold response",
    "line_rate_fraction": "minimum share of the RDMA NIC's line rate the raw transfer must reach",
    "capacity_gain": "minimum gain in requests/s sustained at the capacity SLO with the cache over the baseline, e.g. 0.5",
}


def register(config: pytest.Config) -> None:
    for name, text in {**SCENARIOS, **CAPABILITIES}.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    keys = ", ".join(f"{key}=..." for key in PERF_KEYS)
    config.addinivalue_line("markers", f"{PERF_MARKER}({keys}): performance thresholds of this test")


def check_perf_markers(items: list[pytest.Item]) -> None:
    """Reject unknown or non-numeric threshold keywords before anything runs."""
    for item in items:
        for mark in item.iter_markers(PERF_MARKER):
            if mark.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: mark.{PERF_MARKER} takes keyword arguments only "
                    f"(got positional {mark.args!r}); accepted: {', '.join(PERF_KEYS)}"
                )
            for key, value in mark.kwargs.items():
                if key not in PERF_KEYS:
                    raise pytest.UsageError(
                        f"{item.nodeid}: mark.{PERF_MARKER} accepts only: "
                        f"{', '.join(PERF_KEYS)} (got {key!r})"
                    )
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise pytest.UsageError(
                        f"{item.nodeid}: mark.{PERF_MARKER}({key}={value!r}) must be a number"
                    )


def thresholds(item: pytest.Item) -> dict[str, float]:
    """The thresholds of a test; markers closer to the test win."""
    merged: dict[str, float] = {}
    for mark in reversed(list(item.iter_markers(PERF_MARKER))):
        merged.update(mark.kwargs)
    return merged


def rdma_devices() -> list[str]:
    """RDMA devices pyverbs can open; empty without pyverbs or hardware."""
    if importlib.util.find_spec("pyverbs") is None:
        return []
    import pyverbs.device as device

    try:
        return [dev.name.decode() for dev in device.get_device_list()]
    except Exception:  # pyverbs raises its own error types when no provider loads
        return []


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def skip_reason(item: pytest.Item, protocol: str, attached: bool, allow_eviction: bool = False) -> str | None:
    """Why a capability-marked test cannot run here, or None."""
    # --mooncake-protocol=rdma on a host without a device stops the run at start-up (harness.startup).
    if item.get_closest_marker("requires_rdma") and protocol != "rdma":
        return "needs RDMA: run with --mooncake-protocol=rdma on a host with an RDMA NIC"
    if item.get_closest_marker("requires_gpu") and not gpu_present():
        return "needs a CUDA GPU: nvidia-smi or /dev/nvidia0 not found"
    if item.get_closest_marker("destructive") and attached:
        return "destructive (kills or restarts services): runs only on a cluster pytest spawned"
    if item.get_closest_marker("evicts") and attached and not allow_eviction:
        return ("fills the attached cluster past its capacity, which evicts OTHER tenants' KV "
                "(Mooncake's eviction is global): pass --mooncake-allow-eviction to run it anyway")
    return None

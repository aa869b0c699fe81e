"""Is the transfer path fast enough for the model? Raw Transfer Engine and store-level bandwidth.

The real ``transfer_engine_bench`` runs target and initiator in the cluster's namespace
(spawned clusters; on an attached cluster run it beside the store nodes yourself). The
store-level figure comes from large objects through mooncake.store in the same run and is
reported as a ratio to the raw figure at the same block size; both are compared with what
a model needs for KV reuse to beat recomputation (the Mooncake design's break-even). On
CPU loopback that is far below a big model's need, so the default reports; a threshold
(``mooncake_perf`` marker, or the ``--mooncake-profile``'s for keywords the marker leaves
unset: ``min_gbps``, ``store_ratio``, ``need_ratio``, ``line_rate_fraction``) only applies
when set.
"""

from __future__ import annotations

import json

import pytest

from pytest_mooncake import (
    Kind,
    MasterHandle,
    MasterMetrics,
    MooncakeConfig,
    Record,
    Spawner,
    StoreClient,
    effective_thresholds,
    show,
)
from pytest_mooncake.cluster.transfer_bench import BenchResult, line_rate_gbps
from pytest_mooncake.config.markers import rdma_devices
from pytest_mooncake.qualify.capacity import MODELS, break_even_bandwidth

KiB, MiB = 1 << 10, 1 << 20
BLOCK_SIZES = (64 * KiB, 1 * MiB, 4 * MiB, 16 * MiB)
STORE_SIZES = (1 * MiB, 4 * MiB, 16 * MiB)
# Bytes each store-level size moves: enough puts/gets to time, well within a 2 x 64 MiB cluster.
STORE_BYTES = 64 * MiB
BUFFER = 512 * MiB
BATCH_BYTES = 64 * MiB
PREFIX_TOKENS = 8192
NEED_MODELS = ("llama-3.1-8b", "qwen2.5-32b", "llama3-70b")
NEED_GPU = "H100"


@pytest.fixture(scope="module")
def raw_bandwidth(mooncake_master: MasterHandle, mooncake_spawn: Spawner) -> list[BenchResult]:
    """Every (operation, block size) of the sweep, one target for all initiator runs."""
    if not mooncake_master.spawned:
        pytest.skip("transfer_engine_bench runs next to a spawned cluster; on your hosts run it beside the store nodes")
    with mooncake_spawn.transfer_bench(mooncake_master, buffer_size=BUFFER) as bench:
        return [
            # One thread, 64 requests a batch: within the TCP per-peer queue (1024) on a 2-core
            # host. Large blocks go fewer to a batch (BATCH_BYTES) so a short run still
            # completes many batches instead of timing two or three huge ones.
            bench.run(operation=operation, block_size=block, batch_size=max(1, min(64, BATCH_BYTES // block)),
                      port=12400 + index)
            for index, (operation, block) in enumerate((op, b) for op in ("read", "write") for b in BLOCK_SIZES)
        ]


def _needs() -> dict[str, float]:
    """GB/s each model needs for reusing a PREFIX_TOKENS prefix to beat recomputing it."""
    return {name: break_even_bandwidth(MODELS[name], PREFIX_TOKENS, NEED_GPU) / 1e9 for name in NEED_MODELS}


def _need_lines(label: str, gbps: float) -> list[str]:
    return [f"[transfer need] {label} {gbps:.2f} GB/s = {gbps / need:.2f}x what {name} needs at {PREFIX_TOKENS} "
            f"tokens on one {NEED_GPU} ({need:.2f} GB/s)" for name, need in _needs().items()]


def _check_need_ratio(request: pytest.FixtureRequest, label: str, gbps: float) -> None:
    minimum = effective_thresholds(request.node).get("need_ratio")
    if minimum is not None:
        worst = min(gbps / need for need in _needs().values())
        assert worst >= minimum, f"{label} {gbps:.2f} GB/s is {worst:.2f}x the largest model need < need_ratio {minimum}"


def test_raw_transfer_bandwidth(request: pytest.FixtureRequest, raw_bandwidth: list[BenchResult],
                                mooncake_master: MasterHandle, mooncake_record: Record) -> None:
    for result in raw_bandwidth:
        mooncake_record(Kind.TRANSFER, f"raw-{result.operation}-{result.block_size}", {
            "level": "raw", "protocol": mooncake_master.protocol, "operation": result.operation,
            "block_size": result.block_size, "threads": result.threads, "batch_size": result.batch_size,
            "duration_s": result.duration_s, "batches": result.batches, "gbps": result.gbps})
    best = max(result.gbps for result in raw_bandwidth)
    show(request.config, "\n".join([
        f"[transfer raw {mooncake_master.protocol}] " + ", ".join(
            f"{r.operation} {r.block_size // KiB} KiB: {r.gbps:.2f} GB/s" for r in raw_bandwidth),
        *_need_lines(f"best raw {mooncake_master.protocol}", best)]))
    idle = [f"{r.operation} {r.block_size} B" for r in raw_bandwidth if r.batches == 0 or r.gbps <= 0]
    assert not idle, f"transfer_engine_bench completed no batch for {idle}"
    minimum = effective_thresholds(request.node).get("min_gbps")
    if minimum is not None:
        assert best >= minimum, f"best raw {mooncake_master.protocol} bandwidth {best:.2f} GB/s < min_gbps {minimum}"
    _check_need_ratio(request, "best raw", best)


@pytest.mark.requires_rdma
def test_rdma_fraction_of_line_rate(request: pytest.FixtureRequest, raw_bandwidth: list[BenchResult],
                                    mooncake_config: MooncakeConfig, mooncake_record: Record) -> None:
    devices = [d for d in mooncake_config.rdma_devices.split(",") if d] or rdma_devices()
    line_rate = line_rate_gbps(devices)
    best = max(result.gbps for result in raw_bandwidth)
    fraction = best / line_rate
    mooncake_record(Kind.TRANSFER, "rdma-line-rate", {"devices": devices, "line_rate_gbps": line_rate,
                         "best_gbps": best, "fraction": fraction})
    show(request.config, f"[transfer rdma] best {best:.2f} GB/s = {fraction:.0%} of the line rate "
         f"{line_rate:.2f} GB/s ({', '.join(devices)})")
    minimum = effective_thresholds(request.node).get("line_rate_fraction")
    if minimum is not None:
        assert fraction >= minimum, f"RDMA reached {fraction:.0%} of line rate {line_rate:.2f} GB/s < {minimum:.0%}"


def test_store_level_bandwidth_against_raw_and_model_needs(
    request: pytest.FixtureRequest, mooncake_store: StoreClient, mooncake_run_id: str, mooncake_record: Record,
    mooncake_master: MasterHandle, mooncake_config: MooncakeConfig,
) -> None:
    # The local buffer bounds one object (and holds transfer metadata: stay a page under it);
    # an object lives whole in one segment, and the run must not fill an attached cluster:
    # use at most half the free memory and stay below the eviction watermark (an attached
    # pool's other tenants keep their keys), with objects of at most half the emptiest segment.
    rooms = _segment_rooms(mooncake_master)
    budget = min(STORE_BYTES, sum(rooms) // 2, MasterMetrics(mooncake_master).baseline.write_headroom())
    largest = min(mooncake_config.local_buffer_size - 4096, max(rooms, default=0) // 2)
    plan = {size: budget // size for size in STORE_SIZES if size <= largest and budget // size >= 2}
    if not plan:
        pytest.skip(f"no object size of {[s // MiB for s in STORE_SIZES]} MiB fits twice into {budget // MiB} MiB "
                    f"({sum(rooms) // MiB} MiB free, less below the eviction watermark) under local_buffer_size "
                    f"{mooncake_config.local_buffer_size} B")
    raw = _raw_reads(request)
    limits = effective_thresholds(request.node)
    lines: list[str] = []
    gets: list[float] = []
    ratios: list[tuple[int, float]] = []
    for size, count in plan.items():
        store = mooncake_store.call("put_get_throughput", f"{mooncake_run_id}-bw{size}", count, size)
        assert store["put_failures"] == 0 and store["exact_reads"] == count, \
            f"{count} x {size} B: puts failed or reads were not exact: {store}"
        ratio = store["get_gbps"] / raw[size] if size in raw else None
        mooncake_record(Kind.TRANSFER, f"store-{size}", {
            "level": "store", "protocol": mooncake_master.protocol, "block_size": size, "objects": count, **store,
            "raw_read_gbps": raw.get(size), "store_to_raw": ratio})
        against = f" = {ratio:.2f}x raw read {raw[size]:.2f} GB/s" if ratio is not None else ""
        lines.append(f"{size // MiB} MiB: put {store['put_gbps']:.2f} GB/s, get {store['get_gbps']:.2f} GB/s{against}")
        gets.append(store["get_gbps"])
        if ratio is not None:
            ratios.append((size, ratio))
    best_get = max(gets)
    show(request.config, "\n".join([*(f"[transfer store] {line}" for line in lines),
                                    *_need_lines("best store get", best_get)]))
    if "store_ratio" in limits:
        low = [f"{size} B: {ratio:.2f}" for size, ratio in ratios if ratio < limits["store_ratio"]]
        assert ratios and not low, f"store/raw read below store_ratio {limits['store_ratio']}: {low or 'no raw figure'}"
    _check_need_ratio(request, "best store get", best_get)


def _segment_rooms(master: MasterHandle) -> list[int]:
    """Free bytes of every mounted segment."""
    detail = json.loads(master.admin("/get_segments_detail").body)
    return [int(s["size_bytes"]) - int(s["allocator_used_bytes"]) for s in detail["segments"]]


def _raw_reads(request: pytest.FixtureRequest) -> dict[int, float]:
    """Raw read GB/s per block size from this run's bench sweep; empty where the bench cannot run."""
    try:
        sweep: list[BenchResult] = request.getfixturevalue("raw_bandwidth")
    except pytest.skip.Exception:
        return {}
    return {result.block_size: result.gbps for result in sweep if result.operation == "read"}

"""Is the transfer path fast enough for the model? Raw Transfer Engine and store-level bandwidth.

The real ``transfer_engine_bench`` runs target and initiator in the cluster's namespace
(spawned clusters; on an attached cluster pass --mooncake-bench-bin and run it where the
store nodes are). The store-level figure comes from large objects through mooncake.store
in the same run and is reported as a ratio to the raw figure; both are compared with what
a model needs for KV reuse to beat recomputation (the Mooncake design's break-even).
"""

from __future__ import annotations

import pytest

from pytest_mooncake import MasterHandle, StoreClient
from pytest_mooncake.binaries import find_binary
from pytest_mooncake.capacity import MODELS, break_even_bandwidth
from pytest_mooncake.markers import thresholds
from pytest_mooncake.reporting import show
from pytest_mooncake.results import Results
from pytest_mooncake.session import get_config, state
from pytest_mooncake.transfer_bench import BenchResult, run_initiator, start_target

KiB, MiB = 1 << 10, 1 << 20
BLOCK_SIZES = (64 * KiB, 1 * MiB, 4 * MiB, 16 * MiB)
BUFFER = 512 * MiB
PREFIX_TOKENS = 8192


@pytest.fixture(scope="module")
def raw_bandwidth(request: pytest.FixtureRequest, mooncake_master: MasterHandle, tmp_path_factory: pytest.TempPathFactory) -> list[BenchResult]:
    if not mooncake_master.spawned:
        pytest.skip("transfer_engine_bench runs next to a spawned cluster; on your hosts run it beside the store nodes")
    config = get_config(request.config)
    binary = find_binary("transfer_engine_bench", config.bench_bin, "--mooncake-bench-bin")
    workdir = tmp_path_factory.mktemp("transfer")
    target = start_target(mooncake_master, binary, workdir, state(request.config).janitor, buffer_size=BUFFER,
                          timeout=config.startup_timeout)
    try:
        return [
            # batch x block must fit the buffer: 16 MiB blocks go 16 to a batch.
            run_initiator(mooncake_master, binary, workdir, operation=operation, block_size=block, buffer_size=BUFFER,
                          batch_size=min(64, BUFFER // block // 2), port=12400 + index)
            for index, (operation, block) in enumerate((op, b) for op in ("read", "write") for b in BLOCK_SIZES)
        ]
    finally:
        target.stop()


def test_raw_transfer_bandwidth(request: pytest.FixtureRequest, raw_bandwidth: list[BenchResult], mooncake_master: MasterHandle, mooncake_results: Results) -> None:
    for result in raw_bandwidth:
        mooncake_results.add("transfer", f"raw-{result.operation}-{result.block_size}", {
            "level": "raw", "protocol": mooncake_master.protocol, "operation": result.operation,
            "block_size": result.block_size, "threads": result.threads, "batch_size": result.batch_size,
            "duration_s": result.duration_s, "gbps": result.gbps}, test=request.node.nodeid)
    show(request.config, "[transfer raw] " + ", ".join(f"{r.operation} {r.block_size // KiB} KiB: {r.gbps:.2f} GB/s" for r in raw_bandwidth))
    assert all(r.gbps > 0 and r.batches > 0 for r in raw_bandwidth)
    minimum = thresholds(request.node).get("min_gbps")
    if minimum is not None:
        best = max(r.gbps for r in raw_bandwidth)
        assert best >= minimum, f"best raw bandwidth {best:.2f} GB/s < min_gbps {minimum}"


def test_store_level_bandwidth_against_raw_and_model_needs(
    request: pytest.FixtureRequest, raw_bandwidth: list[BenchResult], mooncake_store: StoreClient, mooncake_run_id: str,
    mooncake_results: Results, mooncake_master: MasterHandle,
) -> None:
    size = min(4 * MiB, get_config(request.config).local_buffer_size // 2)
    store = mooncake_store.call("put_get_throughput", f"{mooncake_run_id}-bw", 16, size)
    assert store["put_failures"] == 0 and store["exact_reads"] == 16, store
    raw_read = max(r.gbps for r in raw_bandwidth if r.operation == "read")
    ratio = store["get_gbps"] / raw_read
    needs = {name: break_even_bandwidth(MODELS[name], PREFIX_TOKENS, "H100") / 1e9 for name in ("llama-3.1-8b", "qwen2.5-32b", "llama3-70b")}
    lines = [f"measured store get {store['get_gbps']:.2f} GB/s = {store['get_gbps'] / need:.2f}x what {name} needs at "
             f"{PREFIX_TOKENS} tokens on one H100 ({need:.2f} GB/s)" for name, need in needs.items()]
    mooncake_results.add("transfer", f"store-{size}", {"level": "store", "protocol": mooncake_master.protocol,
                         "block_size": size, **store, "raw_read_gbps": raw_read, "store_to_raw": ratio,
                         "break_even_gbps": needs}, test=request.node.nodeid)
    show(request.config, f"[transfer store] put {store['put_gbps']:.2f} GB/s, get {store['get_gbps']:.2f} GB/s "
         f"({ratio:.2f}x raw read {raw_read:.2f} GB/s)\n" + "\n".join(f"[transfer need] {line}" for line in lines))
    limits = thresholds(request.node)
    if "store_ratio" in limits:
        assert ratio >= limits["store_ratio"], f"store/raw = {ratio:.2f} < {limits['store_ratio']}"
    if "need_ratio" in limits:
        worst = min(store["get_gbps"] / need for need in needs.values())
        assert worst >= limits["need_ratio"], lines


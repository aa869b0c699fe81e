"""The store's bandwidth on the KV connectors' path, beside the raw Transfer Engine.

vLLM's MooncakeStoreConnector and LMCache read and write KV through buffers registered once
with the store, with batch zero-copy calls (``batch_put_from`` / ``batch_get_into``), one
key per block of all layers. This suite times exactly that, in the client's own process,
with objects the size of a 128-token block of the CI model and of Llama-3.1-8B
(``pytest_mooncake.capacity``), from 1 and 2 client threads, and runs the real
``transfer_engine_bench`` at the same block size, batch and thread count in the same run.
The figure is the ratio store get / raw read. Where it is below 1, ``meta`` says where the
time goes: the share of each batch spent in the master round trip that starts every get
(``batch_get_replica_desc`` timed alone); the rest is the transfer and the client's copy.
A threshold applies only when set (``mooncake_perf(store_ratio=...)`` or the profile's).
"""

from __future__ import annotations

import pytest

from pytest_mooncake import MasterHandle, MasterMetrics, MooncakeConfig, StoreClient
from pytest_mooncake.binaries import find_binary
from pytest_mooncake.capacity import MODELS
from pytest_mooncake.profiles import effective_thresholds
from pytest_mooncake.reporting import show
from pytest_mooncake.results import Results
from pytest_mooncake.session import get_config, state
from pytest_mooncake.transfer_bench import BenchResult, run_initiator, start_target

KiB, MiB = 1 << 10, 1 << 20
BLOCK_TOKENS = 128
# (model, objects per batch): a batch of about 8-32 MiB, as a connector loads a prefix at once.
BLOCKS = (("ci-tiny-llama", 16), ("llama-3.1-8b", 2))
THREADS = (1, 2)
GET_SECONDS = 2.0
BENCH_BUFFER = 128 * MiB


def _plan() -> list[tuple[str, int, int, int]]:
    """(model, block bytes, batch, threads) for every case."""
    return [(model, MODELS[model].kv_bytes(BLOCK_TOKENS), batch, threads)
            for model, batch in BLOCKS for threads in THREADS]


@pytest.fixture(scope="module")
def raw_reads(request: pytest.FixtureRequest, mooncake_master: MasterHandle,
              tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], BenchResult]:
    """transfer_engine_bench reads per (block, threads), at each case's block size and batch."""
    if not mooncake_master.spawned:
        return {}
    config = get_config(request.config)
    binary = find_binary("transfer_engine_bench", config.bench_bin, "--mooncake-bench-bin")
    workdir = tmp_path_factory.mktemp("zero-copy-raw")
    target = start_target(mooncake_master, binary, workdir, state(request.config).janitor, buffer_size=BENCH_BUFFER,
                          timeout=config.startup_timeout, rdma_devices=config.rdma_devices)
    try:
        return {(block, threads): run_initiator(
                    mooncake_master, binary, workdir, operation="read", block_size=block, batch_size=batch,
                    threads=threads, duration=GET_SECONDS, buffer_size=BENCH_BUFFER, port=12600 + index,
                    rdma_devices=config.rdma_devices)
                for index, (_, block, batch, threads) in enumerate(_plan())}
    finally:
        target.stop()


def test_zero_copy_store_bandwidth_against_raw(
    request: pytest.FixtureRequest, mooncake_store: StoreClient, mooncake_master: MasterHandle,
    mooncake_config: MooncakeConfig, mooncake_results: Results, mooncake_run_id: str,
    raw_reads: dict[tuple[int, int], BenchResult],
) -> None:
    headroom = MasterMetrics(mooncake_master).baseline.write_headroom()
    lines, ratios = [], []
    for model, block, batch, threads in _plan():
        footprint = block * batch * threads
        if footprint > headroom // 2:
            lines.append(f"{model} {block // KiB} KiB x{threads} threads: skipped, {footprint // MiB} MiB would "
                         f"not stay within half the {headroom // MiB} MiB below the eviction watermark")
            continue
        got = mooncake_store.call("zero_copy_throughput", f"{mooncake_run_id}-zc{block}-{threads}", block, batch,
                                  threads, GET_SECONDS)
        assert got["put_failures"] == 0 and got["short_reads"] == 0 and got["exact"] == got["objects"], \
            f"{model} {block} B x{threads}: zero-copy puts failed or reads were not exact: {got}"
        raw = raw_reads.get((block, threads))
        ratio = got["get_gbps"] / raw.gbps if raw else None
        meta = got["meta_s_per_batch"] / got["get_s_per_batch"]
        mooncake_results.add("transfer", f"zero-copy-{model}-{threads}t", {
            "level": "store-zero-copy", "model": model, "block_size": block, "batch": batch, "threads": threads,
            **got, "raw_read_gbps": raw.gbps if raw else None, "store_to_raw": ratio, "meta_share": meta},
            test=request.node.nodeid)
        against = f" = {ratio:.2f}x raw read {raw.gbps:.2f} GB/s" if raw and ratio is not None else " (no raw figure: attached)"
        lines.append(f"{model} block {block // KiB} KiB, batch {batch}, {threads} thread(s): batch_get_into "
                     f"{got['get_gbps']:.2f} GB/s{against}; batch_put_from {got['put_gbps']:.2f} GB/s; "
                     f"{got['get_s_per_batch'] * 1e3:.1f} ms a batch, {meta:.0%} of it the master round trip")
        if ratio is not None:
            ratios.append((f"{model} x{threads}", ratio))
    show(request.config, "\n".join(f"[store zero-copy] {line}" for line in lines))
    if not ratios and not mooncake_master.spawned:
        assert any("batch_get_into" in line for line in lines), f"no case fits the attached pool: {lines}"
    minimum = effective_thresholds(request.node).get("store_ratio")
    if minimum is not None:
        low = [f"{case}: {ratio:.2f}" for case, ratio in ratios if ratio < minimum]
        assert ratios and not low, f"zero-copy store/raw below store_ratio {minimum}: {low or 'no raw figure'}"

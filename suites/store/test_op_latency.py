"""Per-operation latency of the store, with pytest-benchmark, against the live cluster.

Each case times one store call as the suites' client makes it: pytest sends the request to
the client process over a Unix socket, the process runs the store operation, the answer
comes back. Values are staged in the client untimed (``stage``), so only the store
operation and that hop are timed; ``test_agent_round_trip`` times the hop alone, to subtract.
Sizes: 4 KiB, and a 128-token KV block of the CI model and of Llama-3.1-8B
(``pytest_mooncake.qualify.capacity``); batch ops move ``BATCH`` objects per call, through a
registered buffer as the KV connectors do. Puts write fresh keys every round (the previous
round's are removed untimed, so the pool holds one round); gets re-read one set of keys.

Save a run with ``--benchmark-json=FILE`` or ``--benchmark-save=NAME``; compare with
``--benchmark-compare`` / ``--benchmark-compare-fail`` (docs: Suites, "Per-operation latency").
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pytest_mooncake import MasterHandle, MasterMetrics, StoreClient
from pytest_mooncake.qualify.capacity import MODELS

# A string condition sees the run's config: skipped when pytest-benchmark is not installed or
# disabled with -p no:benchmark, instead of erroring on the missing fixture.
pytestmark = pytest.mark.skipif("not config.pluginmanager.hasplugin('benchmark')",
                                reason="pytest-benchmark is not installed: install pytest-mooncake with its [suites] extra")

BLOCK_TOKENS = 128
SIZES = {
    "4KiB": 4096,
    "ci-tiny-llama-block": MODELS["ci-tiny-llama"].kv_bytes(BLOCK_TOKENS),
    "llama-3.1-8b-block": MODELS["llama-3.1-8b"].kv_bytes(BLOCK_TOKENS),
}
OPERATIONS = ("put", "get", "batch_put_from", "batch_get_into")
BATCH = 4
BATCH_BYTES = 32 << 20  # a batch of big blocks holds fewer, so one round fits a small pool
ROUNDS_SMALL, ROUNDS_LARGE = 30, 8  # 16 MiB rounds cost tens of ms each on a 2-core host


def test_agent_round_trip(benchmark: Any, mooncake_store: StoreClient) -> None:
    """The hop every case below includes: a request to the client process and its answer."""
    benchmark.group = "agent round trip"
    assert benchmark.pedantic(mooncake_store.call, args=("ping",), rounds=100, iterations=1, warmup_rounds=5) == "pong"


@pytest.mark.parametrize("size_name", list(SIZES))
@pytest.mark.parametrize("operation", OPERATIONS)
def test_op_latency(benchmark: Any, operation: str, size_name: str, mooncake_store: StoreClient,
                    mooncake_master: MasterHandle, mooncake_run_id: str) -> None:
    size = SIZES[size_name]
    count = min(BATCH, max(1, BATCH_BYTES // size)) if operation.startswith("batch") else 1
    headroom = MasterMetrics(mooncake_master).baseline.write_headroom()
    if count * size > headroom // 2:
        pytest.skip(f"{count} x {size} B would not stay within half the {headroom} B below the eviction watermark")
    store = mooncake_store
    prefix = f"{mooncake_run_id}-lat-{operation}-{size_name}"
    benchmark.group = f"{size_name} ({size} B)"
    benchmark.extra_info.update({"bytes_per_call": count * size, "objects_per_call": count})
    rounds = ROUNDS_SMALL if size < (4 << 20) else ROUNDS_LARGE
    written: list[str] = []
    try:
        if operation in ("put", "batch_put_from"):
            serial = itertools.count()

            def fresh_keys() -> tuple[tuple[list[str]], dict[str, Any]]:
                if written:
                    store.batch_remove(written, True)
                    written.clear()
                keys = [f"{prefix}-{next(serial)}-{i}" for i in range(count)]
                store.call("stage", keys, size)
                written.extend(keys)
                return (keys,), {}

            def put(keys: list[str]) -> list[int]:
                if operation == "put":
                    return [store.call("put_staged", keys[0])]
                return list(store.call("batch_put_from_staged", keys, size))

            codes = benchmark.pedantic(put, setup=fresh_keys, rounds=rounds, iterations=1)
            assert codes == [0] * count, f"{operation} of {count} x {size} B failed: {codes}"
        else:
            written.extend(f"{prefix}-{i}" for i in range(count))
            store.call("stage", written, size)
            assert store.call("batch_put_from_staged", written, size) == [0] * count

            def get() -> list[int]:
                if operation == "get":
                    return [store.call("get_size_of_read", written[0])]
                return list(store.call("batch_get_into_checked", written, size))

            lengths = benchmark.pedantic(get, rounds=rounds, iterations=1, warmup_rounds=1)
            assert lengths == [size] * count, f"{operation} of {count} x {size} B read {lengths}"
        # Timed calls return lengths only; the bytes of the last round are checked here, untimed.
        assert store.call("batch_get_into_checked", written, size, check=True) == [size] * count, \
            f"{operation}: what was written does not read back exactly"
    finally:
        if written:
            store.batch_remove(written, True)

"""Writer and reader *processes* on disjoint and shared keys at once: no wrong bytes, no hang."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import pytest

from pytest_mooncake import Kind, MasterHandle, Record, Spawner, StoreClient, StoreNode, show
from pytest_mooncake.cluster.integrity import BAD

WRITERS, READERS = 2, 2
KEYS, SIZE = 150, 64 << 10
READ_SECONDS = 3.0
# A stuck store call fails the test after this long instead of hanging it.
CALL_TIMEOUT = 60.0


def test_concurrent_writers_and_readers(request: pytest.FixtureRequest, mooncake_master: MasterHandle,
                                        mooncake_store_nodes: list[StoreNode], mooncake_store: StoreClient,
                                        mooncake_run_id: str, mooncake_record: Record, mooncake_spawn: Spawner) -> None:
    prefix = f"{mooncake_run_id}-conc"
    own = [f"{prefix}-own{index}" for index in range(WRITERS)]
    shared = f"{prefix}-shared"
    with ExitStack() as stack:
        # Pure clients (no segment) of their own: separate processes, separate Mooncake clients.
        clients = [
            stack.enter_context(mooncake_spawn.store_client(mooncake_master, f"{prefix}-{role}{index}",
                                                            request_timeout=CALL_TIMEOUT)).client
            for role, count in (("writer", WRITERS), ("reader", READERS)) for index in range(count)
        ]
        writers, readers = clients[:WRITERS], clients[WRITERS:]

        def write(index: int) -> dict[str, int]:
            mine = writers[index].call("fill", own[index], KEYS, SIZE, pace_s=0.002)
            ours = writers[index].call("fill", shared, KEYS, SIZE, pace_s=0.002)
            return {key: mine[key] + ours[key] for key in ("ok", "failed", "backpressure")}

        def read(index: int) -> dict[str, int]:
            return dict(readers[index].call("read_while", [*own, shared], KEYS, SIZE, READ_SECONDS))

        with ThreadPoolExecutor(WRITERS + READERS) as pool:
            write_jobs = [pool.submit(write, index) for index in range(WRITERS)]
            read_jobs = [pool.submit(read, index) for index in range(READERS)]
            written = [job.result(timeout=CALL_TIMEOUT) for job in write_jobs]
            seen = [job.result(timeout=CALL_TIMEOUT) for job in read_jobs]
    try:
        final = [mooncake_store.call("verify", name, KEYS, SIZE) for name in (*own, shared)]
    finally:
        mooncake_store.call("remove_by_regex", f"^{prefix}-", True)

    summary: dict[str, Any] = {"writers": written, "readers_during_writes": seen, "final": final}
    mooncake_record(Kind.CONCURRENCY, "writers-readers", summary)
    show(request.config, f"[concurrency] {WRITERS} writer + {READERS} reader processes: reads during writes "
         + ", ".join(f"{outcome}" for outcome in seen))
    assert all(result["ok"] == 2 * KEYS for result in written), f"puts failed: {written}"
    faults = [{kind: n for kind, n in tally.items() if kind in BAD} for tally in seen + final]
    assert not any(faults), f"wrong bytes under concurrency: {faults}"
    assert all(tally.get("exact", 0) > 0 for tally in seen), f"a reader never read a written object: {seen}"
    # Far below the cluster's capacity nothing is evicted, so every object must be there at the end.
    assert final == [{"exact": KEYS}] * (WRITERS + 1), f"objects missing after all writers finished: {final}"

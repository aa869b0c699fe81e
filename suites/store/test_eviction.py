"""Overfill the store: every read is the exact bytes written or a clean miss, never wrong bytes.

The fill runs in a tight loop inside the client's process, so the store really runs full:
puts meet -200 (NO_AVAILABLE_HANDLE) until the master's eviction thread frees space. That is
back-pressure, retried a bounded number of times and counted, not corruption.

Mooncake's eviction is global: overfilling a shared cluster evicts every tenant's keys. The
overfill tests are marked ``evicts`` and run on an attached cluster only with
``--mooncake-allow-eviction``; what runs everywhere is a fill sized from the measured free
space below the eviction watermark, which must keep everything and evict nothing.
"""

from __future__ import annotations

import re

import pytest

from pytest_mooncake import Kind, MasterHandle, MasterMetrics, Record, StoreClient, show
from pytest_mooncake.cluster.integrity import BAD
from pytest_mooncake.cluster.metrics import SAFE_FILL_RATIO

MiB, GiB = 1 << 20, 1 << 30
OBJECT_SIZE = MiB
FILL_FACTOR = 2.5
# Filling an attached cluster 2.5x writes this much at most; bigger clusters are skipped.
FILL_LIMIT = 4 * GiB
# The safe fill proves the point with this much at most, so a big pool costs no more time.
SAFE_FILL_LIMIT = 256 * MiB
NO_AVAILABLE_HANDLE = -200


def _fill_count(metrics: MasterMetrics, factor: float) -> int:
    capacity = metrics.snapshot()["master_total_capacity_bytes"]
    if capacity <= 0:
        pytest.fail(f"{metrics.master.metrics_url}/metrics reports no memory capacity: no store node has mounted a segment")
    if capacity * factor > FILL_LIMIT:
        pytest.skip(f"filling {capacity / GiB:.1f} GiB {factor:g}x would write more than {FILL_LIMIT / GiB:g} GiB")
    return int(factor * capacity / OBJECT_SIZE)


def _keys(prefix: str, count: int) -> str:
    return f"{prefix}-0..{count - 1}"


def _remove_prefix(store: StoreClient, prefix: str) -> None:
    store.call("remove_by_regex", f"^{re.escape(prefix)}-", True)


def _eviction_run(request: pytest.FixtureRequest, store: StoreClient, master: MasterHandle, record: Record,
                  prefix: str) -> dict[str, int]:
    """Fill FILL_FACTOR x the capacity, read everything back, record and print the tally."""
    metrics = MasterMetrics(master)
    count = _fill_count(metrics, FILL_FACTOR)
    filled = store.call("fill", prefix, count, OBJECT_SIZE)
    outcome = store.call("verify", prefix, count, OBJECT_SIZE)
    delta = metrics.delta()
    summary = {
        "operations": 2 * count,
        "capacity_bytes": int(metrics.baseline["master_total_capacity_bytes"]),
        "puts_ok": filled["ok"], "puts_failed": filled["failed"], "last_error": filled["last_error"],
        "backpressure": filled["backpressure"],
        "exact": outcome.get("exact", 0), "miss": outcome.get("miss", 0),
        "corrupt": sum(outcome.get(kind, 0) for kind in BAD),
        # The master's count covers every tenant of the pool; ours are the clean misses.
        "evicted_keys": int(delta.get("master_evicted_key_count", 0)),
        "evictions": int(delta.get("master_successful_evictions_total", 0)),
        "shared_cluster": not master.spawned,
    }
    name = prefix.rsplit("-", 1)[-1]
    record(Kind.EVICTION, name, summary)
    whose = (f"of every tenant ({summary['miss']} of them ours)" if summary["shared_cluster"]
             else "all ours: the cluster is private")
    show(request.config, f"[eviction {name}] {summary['operations']} operations into "
         f"{summary['capacity_bytes'] / MiB:.0f} MiB: the master evicted {summary['evicted_keys']} keys {whose} in "
         f"{summary['evictions']} rounds, {summary['backpressure']} back-pressure retries, "
         f"{summary['exact']} exact, {summary['miss']} clean misses, {summary['corrupt']} corrupt reads")
    assert summary["corrupt"] == 0, f"wrong bytes under eviction: {outcome}"
    return summary


def test_fill_below_the_watermark_keeps_everything_and_evicts_nothing(
        request: pytest.FixtureRequest, mooncake_store: StoreClient, mooncake_master: MasterHandle,
        mooncake_record: Record, mooncake_run_id: str) -> None:
    """Safe on a shared cluster: the fill is sized from the free space below the eviction
    watermark (with a margin for other writers), so every object reads back exactly and the
    master evicts no key, ours or anyone else's."""
    metrics = MasterMetrics(mooncake_master)
    headroom = metrics.baseline.write_headroom()
    count = min(headroom, SAFE_FILL_LIMIT) // OBJECT_SIZE
    if count < 4:
        pytest.skip(f"the pool has {headroom / MiB:.0f} MiB below {SAFE_FILL_RATIO:.0%} of its capacity: "
                    "too little to fill without risking eviction of other tenants' keys")
    prefix = f"{mooncake_run_id}-safefill"
    try:
        filled = mooncake_store.call("fill", prefix, count, OBJECT_SIZE, retries=1)
        outcome = mooncake_store.call("verify", prefix, count, OBJECT_SIZE)
        delta = metrics.delta()
    finally:
        _remove_prefix(mooncake_store, prefix)
    summary = {"objects": count, "headroom_bytes": headroom, "puts_ok": filled["ok"], **outcome,
               "evicted_keys": int(delta.get("master_evicted_key_count", 0))}
    mooncake_record(Kind.EVICTION, "below-watermark", summary)
    show(request.config, f"[eviction below-watermark] {count} x 1 MiB into {headroom / MiB:.0f} MiB of headroom: "
         f"{outcome.get('exact', 0)} exact, {summary['evicted_keys']} keys evicted")
    assert filled["ok"] == count, f"puts into free space below the watermark failed: {filled}"
    assert outcome == {"exact": count}, f"{_keys(prefix, count)}: not every object read back exactly: {outcome}"
    assert summary["evicted_keys"] == 0, (
        f"the master evicted {summary['evicted_keys']} keys while the pool stayed below {SAFE_FILL_RATIO:.0%}: "
        f"the watermark is lower than Mooncake's default, or another tenant filled it meanwhile: {summary}")


@pytest.mark.evicts
def test_overfill_never_returns_wrong_bytes(request: pytest.FixtureRequest, evict_store: StoreClient,
                                            evict_master: MasterHandle, mooncake_record: Record,
                                            mooncake_run_id: str) -> None:
    prefix = f"{mooncake_run_id}-overfill"
    try:
        summary = _eviction_run(request, evict_store, evict_master, mooncake_record, prefix)
    finally:
        _remove_prefix(evict_store, prefix)
    assert summary["puts_failed"] == 0, f"puts still failed after bounded back-pressure retries: {summary}"
    assert summary["evicted_keys"] > 0 and summary["evictions"] > 0, \
        f"{FILL_FACTOR}x the capacity went in, yet the master reports no eviction: {summary}"
    assert summary["exact"] > 0, f"nothing written survived, not even the newest objects: {summary}"
    assert summary["miss"] > 0, f"{FILL_FACTOR}x the capacity reads back in full: the capacity metric is wrong: {summary}"
    assert summary["miss"] <= summary["evicted_keys"], \
        f"more misses than keys the master evicted: writes were lost, not evicted: {summary}"


@pytest.mark.evicts
def test_soft_pinned_objects_outlive_unpinned_ones(request: pytest.FixtureRequest, evict_store: StoreClient,
                                                   evict_master: MasterHandle, mooncake_record: Record,
                                                   mooncake_run_id: str) -> None:
    pinned, unpinned = f"{mooncake_run_id}-softpinned", f"{mooncake_run_id}-unpinned"
    try:
        filled = evict_store.call("fill", pinned, 4, OBJECT_SIZE, config={"soft_pin_action": "ENABLE"})
        assert filled["ok"] == 4, f"soft-pinned puts failed: {filled}"
        summary = _eviction_run(request, evict_store, evict_master, mooncake_record, unpinned)
        kept = evict_store.call("verify", pinned, 4, OBJECT_SIZE)
    finally:
        _remove_prefix(evict_store, pinned)
        _remove_prefix(evict_store, unpinned)
    assert summary["miss"] > 0, f"no unpinned object was evicted, so the pin was never tested: {summary}"
    assert kept == {"exact": 4}, f"soft-pinned objects were evicted while unpinned ones were available: {kept}"


def test_a_store_full_of_hard_pins_says_no_space(small_store: StoreClient, small_master: MasterHandle,
                                                 mooncake_run_id: str) -> None:
    """Hard-pinned objects are never evicted: the store answers -200 to every put, pinned or not,
    and reads back every pinned object exactly, until they are removed (force: reads lease)."""
    prefix = f"{mooncake_run_id}-hardpin"
    capacity = MasterMetrics(small_master).baseline["master_total_capacity_bytes"]
    count = int(capacity // OBJECT_SIZE) + 8
    try:
        filled = small_store.call("fill", prefix, count, OBJECT_SIZE, config={"with_hard_pin": True}, retries=3)
        assert filled["ok"] > 0 and filled["failed"] > 0 and filled["last_error"] == NO_AVAILABLE_HANDLE, \
            f"{count} x 1 MiB hard-pinned into {capacity / MiB:.0f} MiB should end in -200 (no space): {filled}"
        outcome = small_store.call("verify", prefix, count, OBJECT_SIZE)
        assert outcome == {"exact": filled["ok"], "miss": filled["failed"]}, \
            f"every hard-pinned object must read back exactly, and nothing else: {outcome} after {filled}"
        assert small_store.put(f"{prefix}-unpinned", b"x" * OBJECT_SIZE) == NO_AVAILABLE_HANDLE, \
            "with only hard-pinned objects there is nothing to evict, so an ordinary put must get -200"
    finally:
        _remove_prefix(small_store, prefix)
    assert small_store.put(f"{prefix}-after", b"x" * OBJECT_SIZE) == 0, "the store stayed full after removing the pins"
    small_store.remove(f"{prefix}-after", True)

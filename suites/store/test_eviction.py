"""Fill a small private cluster to 2-3x its capacity: every read is exact or a clean miss."""

from __future__ import annotations

import pytest

from pytest_mooncake import MasterMetrics, StoreClient
from pytest_mooncake.reporting import show
from pytest_mooncake.results import Results

pytestmark = pytest.mark.destructive
MiB = 1 << 20


def _eviction_run(request: pytest.FixtureRequest, store: StoreClient, metrics: MasterMetrics, results: Results,
                  name: str, config: dict[str, object] | None = None, fill_factor: float = 2.5) -> dict[str, int]:
    capacity = metrics.snapshot()["master_total_capacity_bytes"]
    count = int(fill_factor * capacity / MiB)
    before = metrics.snapshot()
    filled = store.call("fill", name, count, MiB, config=config, pace_s=0.005)
    outcome = store.call("verify", name, count, MiB)
    delta = metrics.snapshot().delta(before)
    summary = {"operations": 2 * count, "capacity_bytes": int(capacity), **filled, **outcome,
               "evicted_keys": int(delta.get("master_evicted_key_count", 0)),
               "evictions": int(delta.get("master_successful_evictions_total", 0))}
    results.add("eviction", name, summary, test=request.node.nodeid)
    corrupt = sum(outcome.get(kind, 0) for kind in ("stale", "phantom", "corrupt"))
    show(request.config, f"[eviction {name}] {summary['operations']} operations into {capacity / MiB:.0f} MiB: "
         f"{summary['evicted_keys']} keys evicted in {summary['evictions']} rounds, {filled['backpressure']} back-pressure "
         f"retries, {outcome.get('exact', 0)} exact, {outcome.get('miss', 0)} clean misses, {corrupt} corrupt reads")
    assert corrupt == 0, f"wrong bytes under eviction: {outcome}"
    return summary


def test_overfill_never_returns_wrong_bytes(request, small_store, small_master, mooncake_results) -> None:  # type: ignore[no-untyped-def]
    metrics = MasterMetrics(small_master)
    summary = _eviction_run(request, small_store, metrics, mooncake_results, "overfill")
    assert summary["failed"] == 0, f"puts failed beyond back-pressure: {summary}"
    assert summary["evicted_keys"] > 0, "2.5x the capacity went in, yet the master evicted nothing"
    assert summary["miss"] > 0 and summary["exact"] > 0
    small_store.call("remove_by_regex", "^overfill-", True)


def test_soft_pinned_objects_outlive_unpinned_ones(request, small_store, small_master, mooncake_results) -> None:  # type: ignore[no-untyped-def]
    metrics = MasterMetrics(small_master)
    pinned = small_store.call("fill", "pinned", 4, MiB, config={"soft_pin_action": "ENABLE"})
    assert pinned["ok"] == 4
    _eviction_run(request, small_store, metrics, mooncake_results, "unpinned")
    kept = small_store.call("verify", "pinned", 4, MiB)
    assert kept.get("exact") == 4, f"soft-pinned objects were evicted while unpinned ones were available: {kept}"
    small_store.call("remove_by_regex", "^(pinned|unpinned)-", True)


def test_a_store_full_of_hard_pins_says_no_space(small_store) -> None:  # type: ignore[no-untyped-def]
    filled = small_store.call("fill", "hard", 40, MiB, config={"with_hard_pin": True}, retries=3)
    try:
        assert filled["failed"] > 0 and filled["last_error"] == -200, f"expected NO_AVAILABLE_HANDLE (-200): {filled}"
        outcome = small_store.call("verify", "hard", 40, MiB)
        assert outcome.get("exact") == filled["ok"], f"hard-pinned objects must all read back exactly: {outcome}"
    finally:
        small_store.call("remove_by_regex", "^hard-", True)

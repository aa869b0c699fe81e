"""Is the cluster we run against whole: master healthy, store nodes mounted, data round-trips?"""

from __future__ import annotations

import hashlib

from pytest_mooncake import MasterHandle, MasterMetrics, StoreClient, StoreNode


def test_master_reports_ready(mooncake_master: MasterHandle) -> None:
    health = mooncake_master.admin("/health")
    assert health.status == 200, health.body
    assert '"service_ready":true' in health.body.replace(" ", ""), health.body


def test_spawned_nodes_are_mounted(
    mooncake_master: MasterHandle, mooncake_store_nodes: list[StoreNode], mooncake_metrics: MasterMetrics
) -> None:
    segments = set(mooncake_master.admin("/get_all_segments").body.split())
    ours = {node.segment_name for node in mooncake_store_nodes}
    assert ours <= segments, f"segments {ours - segments} not mounted; master lists {segments}"
    capacity = mooncake_metrics.snapshot()["master_total_capacity_bytes"]
    assert capacity >= sum(node.segment_size for node in mooncake_store_nodes)


def test_value_round_trips_through_the_pool(
    mooncake_store: StoreClient, mooncake_run_id: str, mooncake_metrics: MasterMetrics
) -> None:
    key = f"{mooncake_run_id}-roundtrip"
    value = hashlib.sha256(key.encode()).digest() * 1024
    assert mooncake_store.put(key, value) == 0
    assert mooncake_store.get(key) == value
    assert mooncake_metrics.delta()["master_put_end_requests_total"] >= 1
    assert mooncake_store.remove(key, force=True) == 0

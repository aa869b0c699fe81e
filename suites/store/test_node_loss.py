"""A store node dies (SIGKILL), or the non-HA master restarts: no wrong bytes, ever.

Both run on private clusters with a short client_ttl, so the master expires a dead node
within seconds.
"""

from __future__ import annotations

import pytest

from pytest_mooncake import MasterHandle, MasterMetrics, StoreClient, StoreNode, factories, wait_for
from pytest_mooncake.cluster.integrity import value_for

pytestmark = pytest.mark.destructive

SIZE = 4096
OBJECT_NOT_FOUND = -704

loss_master = factories.mooncake_master_proc(lease_ttl="500ms", client_ttl="2s")
loss_nodes = factories.mooncake_store_nodes("loss_master", count=2, segment_size="16MiB", local_buffer_size="4MiB")
loss_store = factories.mooncake_store("loss_master", "loss_nodes", local_buffer_size="4MiB")
restart_master = factories.mooncake_master_proc(lease_ttl="500ms", client_ttl="2s")
restart_nodes = factories.mooncake_store_nodes("restart_master", count=1, segment_size="16MiB", local_buffer_size="4MiB")
restart_store = factories.mooncake_store("restart_master", "restart_nodes", local_buffer_size="4MiB")



def test_node_loss_keeps_replicas_and_misses_cleanly(loss_master: MasterHandle, loss_nodes: list[StoreNode],
                                                     loss_store: StoreClient, mooncake_run_id: str) -> None:
    doomed, survivor = loss_nodes
    metrics = MasterMetrics(loss_master)
    replicated = [f"{mooncake_run_id}-r2-{i}" for i in range(10)]
    only_doomed = [f"{mooncake_run_id}-dead-{i}" for i in range(10)]
    only_survivor = [f"{mooncake_run_id}-alive-{i}" for i in range(10)]
    for key in replicated:
        assert loss_store.put(key, value_for(key, SIZE), {"replica_num": 2}) == 0
        assert sorted(loss_store.replica_endpoints(key)) == sorted([doomed.segment_name, survivor.segment_name]), \
            f"{key}: replica_num=2 with two nodes must place one replica on each"
    for keys, node in ((only_doomed, doomed), (only_survivor, survivor)):
        for key in keys:
            assert loss_store.put(key, value_for(key, SIZE), {"preferred_segment": node.segment_name}) == 0
            assert loss_store.replica_endpoints(key) == [node.segment_name], f"{key} was not placed on {node.name}"
    clients = metrics.snapshot()["master_active_clients"]

    doomed.kill()
    # Reads are not retried on another replica until the master drops the dead one (client_ttl).
    took = wait_for(lambda: metrics.snapshot()["master_active_clients"] == clients - 1, loss_master.client_ttl + 15,
                 f"the master to expire the killed node (client_ttl {loss_master.client_ttl:g} s)")

    for key in replicated + only_survivor:
        assert loss_store.get(key) == value_for(key, SIZE), f"{key} lost although a replica survived"
        assert loss_store.replica_endpoints(key) == [survivor.segment_name]
    for key in only_doomed:
        assert loss_store.get(key) == b"", f"{key} lived only on the dead node, yet returned bytes"
        assert loss_store.get_size(key) == OBJECT_NOT_FOUND
    readable = len(replicated) + len(only_survivor)
    after = metrics.snapshot()
    assert after["master_key_count"] == readable, \
        f"the master counts {after['master_key_count']:g} keys, but {readable} are readable {took:.1f} s after the kill"
    assert after["master_active_clients"] == clients - 1


def test_non_ha_master_restart_forgets_keys_and_clients_come_back(restart_master: MasterHandle,
                                                                  restart_nodes: list[StoreNode],
                                                                  restart_store: StoreClient,
                                                                  mooncake_run_id: str) -> None:
    (node,) = restart_nodes
    before, after = f"{mooncake_run_id}-before-restart", f"{mooncake_run_id}-after-restart"
    assert restart_store.put(before, value_for(before, SIZE)) == 0
    restart_master.restart()
    segments = lambda: node.segment_name in restart_master.admin("/get_all_segments").body.split()  # noqa: E731
    wait_for(segments, 30, f"{node.name} to remount its segment on the restarted master")
    wait_for(lambda: restart_store.is_exist(before) >= 0, 30, "the client to reach the restarted master")
    assert restart_store.is_exist(before) == 0, "a non-HA master restart must lose all object metadata"
    wait_for(lambda: restart_store.put(after, value_for(after, SIZE)) == 0, 30, "puts to work again")
    assert restart_store.get(after) == value_for(after, SIZE)
    assert MasterMetrics(restart_master).snapshot()["master_total_capacity_bytes"] == node.segment_size

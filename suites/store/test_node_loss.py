"""Replicas across nodes, then a node dies (SIGKILL) and the master restarts: no wrong bytes, ever."""

from __future__ import annotations

import time

import pytest

from pytest_mooncake import MasterMetrics, factories
from pytest_mooncake.integrity import value_for

pytestmark = pytest.mark.destructive

loss_master = factories.mooncake_master_proc(lease_ttl="500ms", client_ttl="2s")
loss_nodes = factories.mooncake_store_nodes("loss_master", count=2, segment_size="16MiB", local_buffer_size="4MiB")
loss_store = factories.mooncake_store("loss_master", "loss_nodes", local_buffer_size="4MiB")
restart_master = factories.mooncake_master_proc(lease_ttl="500ms", client_ttl="2s")
restart_nodes = factories.mooncake_store_nodes("restart_master", count=1, segment_size="16MiB", local_buffer_size="4MiB")
restart_store = factories.mooncake_store("restart_master", "restart_nodes", local_buffer_size="4MiB")


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.25)


def test_node_loss_keeps_replicas_and_misses_cleanly(loss_master, loss_nodes, loss_store) -> None:  # type: ignore[no-untyped-def]
    doomed, survivor = loss_nodes
    metrics = MasterMetrics(loss_master)
    replicated = [f"r2-{i}" for i in range(10)]
    only_doomed = [f"dead-{i}" for i in range(10)]
    for key in replicated:
        assert loss_store.put(key, value_for(key, 4096), {"replica_num": 2}) == 0
        assert set(loss_store.replica_endpoints(key)) == {doomed.segment_name, survivor.segment_name}
    for key in only_doomed:
        assert loss_store.put(key, value_for(key, 4096), {"preferred_segment": doomed.segment_name}) == 0
        assert loss_store.replica_endpoints(key) == [doomed.segment_name]
    clients = metrics.snapshot()["master_active_clients"]

    doomed.kill()
    _wait(lambda: metrics.snapshot()["master_active_clients"] == clients - 1, loss_master.client_ttl + 15,
          "the master to expire the dead node")

    for key in replicated:
        assert loss_store.get(key) == value_for(key, 4096), f"{key} lost although a replica survived"
        assert loss_store.replica_endpoints(key) == [survivor.segment_name]
    for key in only_doomed:
        assert loss_store.get(key) == b"", f"{key} lived only on the dead node, yet returned bytes"
        assert loss_store.get_size(key) == -704
    assert metrics.snapshot()["master_key_count"] == len(replicated)


def test_non_ha_master_restart_forgets_keys_and_clients_come_back(restart_master, restart_nodes, restart_store) -> None:  # type: ignore[no-untyped-def]
    (node,) = restart_nodes
    assert restart_store.put("before-restart", b"gone soon") == 0
    restart_master.restart()
    segments = lambda: node.segment_name in restart_master.admin("/get_all_segments").body.split()  # noqa: E731
    _wait(segments, 30, "the store node to remount its segment on the restarted master")
    _wait(lambda: restart_store.is_exist("before-restart") >= 0, 30, "the client to reach the restarted master")
    assert restart_store.is_exist("before-restart") == 0, "a non-HA master restart must lose all object metadata"
    _wait(lambda: restart_store.put("after-restart", b"new") == 0, 30, "puts to work again")
    assert restart_store.get("after-restart") == b"new"

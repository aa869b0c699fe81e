"""The HA master's leader dies under load: clients fail over, nothing reads wrong.

Mooncake's own anchor is ``LeaderKilledFailover`` (e2e/chaos_test.cpp): kill the leader,
and after the view change a new put and get succeed. Here three masters elect a leader
through a real etcd (``ha_masters=3``), store nodes and the client find it through
``etcd://``, and the leader is SIGKILLed while the client runs a stream of checked
operations. Leader election alone (no ``--enable_oplog``) replicates no object metadata,
so Mooncake documents the segments, not the objects, as what survives: the nodes remount
on the new leader, keys written before become clean misses, and every read before, during
and after the view change is the exact latest bytes or a clean miss.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import pytest

from pytest_mooncake import Kind, MasterHandle, MasterMetrics, Record, StoreClient, StoreNode, factories, show, wait_for
from pytest_mooncake.cluster.integrity import BAD, value_for

pytestmark = [
    pytest.mark.destructive,
    pytest.mark.skipif(shutil.which("etcd") is None,
                       reason="HA masters need etcd on $PATH: apt-get install etcd-server"),
]

SIZE = 4096
LOAD_SECONDS = 20.0

ha_master = factories.mooncake_master_proc(ha_masters=3, lease_ttl="500ms", client_ttl="2s")
ha_nodes = factories.mooncake_store_nodes("ha_master", count=2, segment_size="16MiB", local_buffer_size="4MiB")
ha_store = factories.mooncake_store("ha_master", "ha_nodes", local_buffer_size="4MiB")



def test_leader_killed_under_load_clients_fail_over(request: pytest.FixtureRequest, ha_master: MasterHandle,
                                                   ha_nodes: list[StoreNode], ha_store: StoreClient,
                                                   mooncake_record: Record, mooncake_run_id: str) -> None:
    assert ha_master.ha is not None
    before = [f"{mooncake_run_id}-before-{i}" for i in range(20)]
    for key in before:
        assert ha_store.put(key, value_for(key, SIZE)) == 0
    capacity = MasterMetrics(ha_master).snapshot()["master_total_capacity_bytes"]
    old_leader = str(ha_master.endpoint)

    load: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: load.update(ha_store.call(
        "soak", f"{mooncake_run_id}-load", 10**6, SIZE, 200, 13, seconds=LOAD_SECONDS)))
    runner.start()
    time.sleep(3)
    view_change = ha_master.kill_leader(timeout=60)
    runner.join(LOAD_SECONDS + 120)
    assert not runner.is_alive(), "the load did not finish: a store call hung across the failover"

    remount = wait_for(lambda: MasterMetrics(ha_master).snapshot()["master_total_capacity_bytes"] == capacity, 60,
                    f"both store nodes to remount their segments on the new leader {ha_master.endpoint}")
    after = f"{mooncake_run_id}-after"
    wait_for(lambda: ha_store.put(after, value_for(after, SIZE)) == 0, 60, "a put to succeed after the view change")
    assert ha_store.get(after) == value_for(after, SIZE), "a get after the view change must return the put's bytes"
    reads = [ha_store.get(key) for key in before]
    kept = sum(read == value_for(key, SIZE) for key, read in zip(before, reads, strict=True))
    wrong = [key for key, read in zip(before, reads, strict=True) if read not in (b"", value_for(key, SIZE))]

    tally = load.get("tally", {})
    summary = {"masters": len(ha_master.ha.masters), "old_leader": old_leader, "new_leader": str(ha_master.endpoint),
               "view_change_s": view_change, "remount_s": remount, "keys_before": len(before), "kept_before": kept,
               "load_ops": load.get("ops"), "load_tally": tally, "load_errors": load.get("errors")}
    mooncake_record(Kind.FAULTS, "ha-leader-failover", summary)
    show(request.config, f"[ha failover] leader {old_leader} killed under load; {ha_master.endpoint} served after "
         f"{view_change:.1f} s, both nodes remounted {remount:.1f} s later; keys written before: {kept}/{len(before)} "
         f"kept, the rest clean misses; load {load.get('ops')} ops: {tally}, failed calls by code {load.get('errors')}")
    assert not wrong, f"keys written before the failover read back wrong bytes: {wrong}"
    assert not any(tally.get(kind) for kind in BAD), f"bad reads under failover: {tally}"
    assert tally.get("exact", 0) > 0, f"the load read nothing back exactly: {load}"

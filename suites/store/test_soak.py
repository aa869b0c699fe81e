"""A soak: many store operations under eviction, with a node kill, a partition and a leader
failover mixed in, every read checked.

The cluster: three store nodes of 16 MiB on hosts of their own (``multi_host``), and, where
etcd is installed, two HA masters (``ha_masters=2``). The client runs a random stream of
upserts (a new version each), gets and removes over more keys than fit, so the master
evicts all along. The stream runs in phases, and a fault hits the cluster while each
middle phase runs:

1. ``steady``: no fault; every miss must be an eviction (misses <= keys the master evicted);
2. ``node-kill``: one node is SIGKILLed; its keys become clean misses once it expires;
3. ``partition``: another node's link is cut for a few seconds, then healed;
4. ``failover``: the HA leader is SIGKILLed (without etcd: no fault, reported);
5. ``recovery``: once the survivors' segments are mounted again (a node whose lease ran out
   during a fault mounts itself again; 60 s at most), the stream goes on on what is left.

Every read is the exact latest version or a clean miss: 0 corrupt, stale or phantom reads.
A miss is counted once per version written; it is explained by eviction (the master's
count) or, in a fault phase, by the fault. ``--mooncake-soak-ops`` sets the total
(12,000 by default, a CI-sized run; 100,000 or more for the full soak).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pytest_mooncake import (
    Kind,
    MasterHandle,
    MasterMetrics,
    MooncakeConfig,
    Record,
    StoreClient,
    StoreNode,
    factories,
    show,
)
from pytest_mooncake.cluster.integrity import BAD

pytestmark = pytest.mark.destructive

SIZE = 128 << 10
KEYSPACE = 1000  # 125 MiB of distinct values into a 48 MiB pool: eviction from the first phase on
FAULT_AFTER_S = 0.5
PARTITION_S = 3.0
REMOUNT_TIMEOUT_S = 60.0
HA = 2 if shutil.which("etcd") else 0

soak_master = factories.mooncake_master_proc(multi_host=True, ha_masters=HA, lease_ttl="500ms", client_ttl="2s")
soak_nodes = factories.mooncake_store_nodes("soak_master", count=3, segment_size="16MiB", local_buffer_size="4MiB")
soak_store = factories.mooncake_store("soak_master", "soak_nodes", local_buffer_size="4MiB")


def _evicted(master: MasterHandle) -> float:
    return MasterMetrics(master).snapshot().get("master_evicted_key_count")


def _remounted(master: MasterHandle, want_bytes: int, timeout_s: float) -> tuple[float, int]:
    """Seconds until the master's pool holds ``want_bytes`` again, and what it holds then. A node
    whose lease ran out during a fault (the partition outlasts ``client_ttl``; a loaded host can
    delay anyone's ping) is unmounted and mounts itself again a few seconds later; until then
    every put on an empty pool fails at once."""
    started = time.monotonic()
    while True:
        capacity = int(MasterMetrics(master).snapshot().get("master_total_capacity_bytes"))
        waited = time.monotonic() - started
        if capacity >= want_bytes or waited >= timeout_s:
            return waited, capacity
        time.sleep(0.25)


def test_soak_under_eviction_and_faults(request: pytest.FixtureRequest, soak_master: MasterHandle,
                                        soak_nodes: list[StoreNode], soak_store: StoreClient,
                                        mooncake_config: MooncakeConfig, mooncake_record: Record,
                                        mooncake_run_id: str) -> None:
    killed, partitioned = soak_nodes[2], soak_nodes[1]

    def partition() -> str:
        partitioned.link.partition()
        time.sleep(PARTITION_S)
        partitioned.link.heal()
        return f"{partitioned.name} cut for {PARTITION_S:g} s, healed"

    def failover() -> str:
        if soak_master.ha is None:
            return "none: etcd is not installed, so the master is not HA"
        took = soak_master.kill_leader(timeout=60)
        return f"leader killed, {soak_master.endpoint} served after {took:.1f} s"

    def kill() -> str:
        killed.kill()
        return f"{killed.name} SIGKILLed"

    phases: list[tuple[str, Callable[[], str] | None]] = [
        ("steady", None), ("node-kill", kill), ("partition", partition), ("failover", failover), ("recovery", None)]
    per_phase = mooncake_config.soak_ops // len(phases)
    state: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    survivors = sum(node.segment_size for node in soak_nodes if node is not killed)
    remount: dict[str, float] = {}
    for index, (name, fault) in enumerate(phases):
        if name == "recovery":
            waited, capacity = _remounted(soak_master, survivors, REMOUNT_TIMEOUT_S)
            remount = {"remount_s": waited, "capacity_bytes": capacity}
            assert capacity > 0, (f"no store node mounted its segment again within {REMOUNT_TIMEOUT_S:g} s of the faults "
                                  f"(the master's pool holds 0 bytes; the survivors have {survivors}): the store did not recover; "
                                  f"per phase: {[(r['phase'], r['fault'], r['tally'], r['errors']) for r in rows]}")
        evicted_before = _evicted(soak_master)
        leader_before = soak_master.endpoint
        out: dict[str, Any] = {}

        def run(out: dict[str, Any], seed: int, state: dict[str, Any] | None) -> None:
            out.update(soak_store.call("soak", f"{mooncake_run_id}-soak", per_phase, SIZE, KEYSPACE, seed, state=state))

        runner = threading.Thread(target=run, args=(out, index, state))
        runner.start()
        what = ""
        if fault is not None:
            time.sleep(FAULT_AFTER_S)
            what = fault()
        runner.join(600)
        assert not runner.is_alive(), f"phase {name} did not finish within 600 s"
        state = out.pop("state")
        # A new leader counts from zero; its whole count belongs to this phase.
        evicted = _evicted(soak_master) - (evicted_before if soak_master.endpoint == leader_before else 0)
        missed = out["missed_versions"]
        by_eviction = min(missed, int(evicted))
        rows.append({"phase": name, "fault": what, **out, "evicted_keys": int(evicted),
                     "misses_by_eviction": by_eviction, "misses_by_fault": missed - by_eviction,
                     **(remount if name == "recovery" else {})})
    wall = time.monotonic() - started

    total = {key: sum(row[key] for row in rows) for key in
             ("ops", "get", "upsert_ok", "upsert_failed", "remove_ok", "remove_failed", "unchecked", "missed_versions",
              "evicted_keys", "misses_by_eviction", "misses_by_fault")}
    tally: dict[str, int] = {}
    for row in rows:
        for kind, count in row["tally"].items():
            tally[kind] = tally.get(kind, 0) + count
    summary = {"ops": total["ops"], "wall_s": wall, "ops_per_s": total["ops"] / wall, "tally": tally, **total,
               "ha": soak_master.ha is not None, "phases": rows}
    mooncake_record(Kind.SOAK, "soak", summary)
    show(request.config, "\n".join([
        f"[soak] {total['ops']} operations in {wall:.0f} s ({total['ops'] / wall:.0f}/s): reads {tally}, "
        f"{total['missed_versions']} versions missed = {total['misses_by_eviction']} by eviction "
        f"(master evicted {total['evicted_keys']} keys) + {total['misses_by_fault']} in fault phases; "
        f"{total['unchecked']} reads of keys whose last write failed left unchecked",
        *(f"[soak {row['phase']}] {row['ops']} ops, {row['fault'] or 'no fault'}: {row['tally']}, missed "
          f"{row['missed_versions']} (eviction {row['misses_by_eviction']}, fault {row['misses_by_fault']}), "
          f"failed calls {row['errors']}"
          + (f"; the pool held {row['capacity_bytes'] >> 20} MiB {row['remount_s']:.1f} s after the faults"
             if "remount_s" in row else "") for row in rows)]))
    bad = {kind: tally[kind] for kind in BAD if tally.get(kind)}
    assert not bad, f"bad reads in the soak: {bad}; per phase: {[(r['phase'], r['tally']) for r in rows]}"
    steady = rows[0]
    assert steady["evicted_keys"] > 0, (f"the first phase never made the master evict: no eviction to soak under (raise --mooncake-soak-ops): "
                                     f"{steady}")
    assert steady["misses_by_fault"] == 0, \
        f"before any fault, {steady['missed_versions']} versions missed but the master evicted only {steady['evicted_keys']} keys: " \
        f"writes were lost: {steady}"
    assert tally.get("exact", 0) > 0 and rows[-1]["tally"].get("exact", 0) > 0, \
        f"nothing read back exactly after the faults: {rows[-1]}"

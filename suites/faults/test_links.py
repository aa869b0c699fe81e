"""One slow, lossy or cut link among several hosts: exact bytes or a clean failure, never wrong bytes.

The cluster runs with ``multi_host``: the master and each store node in a network namespace
of their own, joined by a bridge, so a fault on one node's veth hits that node only (see
``pytest_mooncake.cluster.faults``).

The store's deadline for a read is the object's lease (``lease_ttl``, 500 ms here): the
store client on TCP does not abort a slow transfer (``MC_TRANSFER_TIMEOUT`` belongs to the
Python ``TransferEngine``, not the store), it finishes it, finds the lease expired and fails
the read with -707 (LEASE_EXPIRED), never handing back bytes the master may have freed
meanwhile. A read that fits the lease must return the exact bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pytest_mooncake import MasterHandle, StoreClient, StoreNode, factories, show, wait_for
from pytest_mooncake.cluster.faults import LinkFaultUnsupported
from pytest_mooncake.cluster.integrity import value_for

pytestmark = pytest.mark.destructive

KiB, MiB = 1 << 10, 1 << 20
SMALL, LARGE = 64 * KiB, 4 * MiB
OBJECT_NOT_FOUND, LEASE_EXPIRED = -704, -707

lan_master = factories.mooncake_master_proc(multi_host=True, lease_ttl="500ms", client_ttl="2s")
lan_nodes = factories.mooncake_store_nodes("lan_master", count=2, segment_size="32MiB", local_buffer_size="8MiB")
lan_store = factories.mooncake_store("lan_master", "lan_nodes", local_buffer_size="8MiB")



@pytest.fixture
def faulty(lan_nodes: list[StoreNode]) -> Iterator[StoreNode]:
    """The node whose link the test breaks; healed afterwards, whatever the test did."""
    node = lan_nodes[0]
    try:
        yield node
    finally:
        node.link.heal()


def _put_on(store: StoreClient, node: StoreNode, key: str, size: int) -> None:
    assert store.put(key, value_for(key, size), {"preferred_segment": node.segment_name}) == 0, f"put {key}"
    assert store.replica_endpoints(key) == [node.segment_name], f"{key} was not placed on {node.name}"


def _timed_read(store: StoreClient, key: str, size: int) -> tuple[str, float]:
    """('exact' | 'failed <code>' | 'WRONG BYTES', seconds) of one zero-copy read."""
    started = time.monotonic()
    code, got = store.call("get_into", key, size)
    took = time.monotonic() - started
    if code == size and got == value_for(key, size):
        return "exact", took
    return (f"failed {code}" if code < 0 else "WRONG BYTES"), took


def test_rate_cap_slow_reads_fail_cleanly_fast_ones_are_exact(request: pytest.FixtureRequest, lan_store: StoreClient,
                                                             lan_master: MasterHandle, faulty: StoreNode,
                                                             mooncake_run_id: str) -> None:
    small, large = f"{mooncake_run_id}-rate-small", f"{mooncake_run_id}-rate-large"
    _put_on(lan_store, faulty, small, SMALL)
    _put_on(lan_store, faulty, large, LARGE)
    rate = 512 * KiB  # 4 MiB takes 8 s, far past the 500 ms lease; 64 KiB takes 0.125 s
    faulty.link.rate(rate)
    fast, fast_s = _timed_read(lan_store, small, SMALL)
    slow, slow_s = _timed_read(lan_store, large, LARGE)
    faulty.link.heal()
    after, after_s = _timed_read(lan_store, large, LARGE)
    show(request.config, f"[link rate {rate // KiB} KiB/s on {faulty.name}] 64 KiB read: {fast} in {fast_s:.2f} s; "
         f"4 MiB read: {slow} in {slow_s:.2f} s (lease {lan_master.lease_ttl:g} s); healed: {after} in {after_s:.2f} s")
    assert fast == "exact", f"a 64 KiB read fits the cap within the lease, yet: {fast}"
    assert slow == f"failed {LEASE_EXPIRED}", \
        f"a 4 MiB read needs {LARGE / rate:.0f} s at the cap, past the lease: it must fail with -707, got {slow}"
    assert after == "exact", f"after healing the link the object must read back exactly: {after}"


def test_packet_loss_costs_time_never_bytes(request: pytest.FixtureRequest, lan_store: StoreClient,
                                            faulty: StoreNode, mooncake_run_id: str) -> None:
    keys = [f"{mooncake_run_id}-loss-{i}" for i in range(20)]
    for key in keys:
        _put_on(lan_store, faulty, key, SMALL)
    percent = 10.0
    faulty.link.loss(percent)
    outcomes = [_timed_read(lan_store, key, SMALL) for key in keys]
    faulty.link.heal()
    exact = sum(outcome == "exact" for outcome, _ in outcomes)
    slowest = max(took for _, took in outcomes)
    show(request.config, f"[link loss {percent:g}% on {faulty.name}] {exact}/{len(keys)} x 64 KiB reads exact, "
         f"the rest {sorted({o for o, _ in outcomes if o != 'exact'}) or 'none'}; slowest {slowest:.2f} s")
    assert not [o for o, _ in outcomes if o == "WRONG BYTES"], f"wrong bytes under packet loss: {outcomes}"
    assert exact >= len(keys) // 2, f"TCP retransmits {percent:g}% loss; most reads must complete: {outcomes}"


def test_delay_within_the_timeout_is_exact(request: pytest.FixtureRequest, lan_store: StoreClient,
                                           faulty: StoreNode, mooncake_run_id: str) -> None:
    key = f"{mooncake_run_id}-delay"
    _put_on(lan_store, faulty, key, SMALL)
    _, before_s = _timed_read(lan_store, key, SMALL)
    try:
        faulty.link.delay(50)
    except LinkFaultUnsupported as exc:
        pytest.skip(str(exc))
    outcome, took = _timed_read(lan_store, key, SMALL)
    show(request.config, f"[link delay 50 ms each way on {faulty.name}] 64 KiB read: {outcome} in {took:.2f} s "
         f"(before {before_s:.3f} s)")
    assert outcome == "exact", f"a delayed read within the lease must be exact: {outcome}"
    assert took >= 0.1, f"the read took {took:.3f} s, less than one delayed round trip: the delay did not apply"


def test_partition_expires_the_node_and_heal_brings_it_back(
    request: pytest.FixtureRequest, lan_master: MasterHandle, lan_nodes: list[StoreNode], lan_store: StoreClient,
    faulty: StoreNode, mooncake_run_id: str,
) -> None:
    survivor = lan_nodes[1]
    cut = [f"{mooncake_run_id}-cut-{i}" for i in range(10)]
    kept = [f"{mooncake_run_id}-kept-{i}" for i in range(10)]
    for key in cut:
        _put_on(lan_store, faulty, key, SMALL)
    for key in kept:
        _put_on(lan_store, survivor, key, SMALL)
    segments = lambda: lan_master.admin("/get_all_segments").body.split()  # noqa: E731

    faulty.link.partition()
    expired = wait_for(lambda: faulty.segment_name not in segments(), lan_master.client_ttl + 20,
                    f"the master to expire the partitioned {faulty.name} (client_ttl {lan_master.client_ttl:g} s)")
    for key in cut:
        assert lan_store.get(key) == b"", f"{key} lived only on the partitioned node, yet returned bytes"
        assert lan_store.get_size(key) == OBJECT_NOT_FOUND
    for key in kept:
        assert lan_store.get(key) == value_for(key, SMALL), f"{key} on the other node must still read back exactly"
    during = f"{mooncake_run_id}-during"
    assert lan_store.put(during, value_for(during, SMALL)) == 0, "puts must keep working on the other node"
    assert lan_store.replica_endpoints(during) == [survivor.segment_name]

    faulty.link.heal()
    rejoined = wait_for(lambda: faulty.segment_name in segments(), 60, f"{faulty.name} to remount after the partition")
    attempts: list[str] = []

    def serves() -> bool:
        """A put placed on the healed node reads back exactly; until then every read is clean."""
        key = f"{mooncake_run_id}-back-{len(attempts)}"
        if lan_store.put(key, value_for(key, SMALL), {"preferred_segment": faulty.segment_name}) != 0:
            attempts.append("put failed")
            return False
        assert lan_store.replica_endpoints(key) == [faulty.segment_name], f"{key} was not placed on {faulty.name}"
        got = lan_store.get(key)
        assert got in (b"", value_for(key, SMALL)), f"{key} on the healed node read back wrong bytes"
        attempts.append("exact" if got else "clean miss")
        return bool(got)

    serving = wait_for(serves, 30, f"{faulty.name} to serve a put placed on it again after the heal")
    show(request.config, f"[partition {faulty.name}] expired by the master after {expired:.1f} s; its "
         f"{len(cut)} keys clean misses, the other node's {len(kept)} exact; remounted {rejoined:.1f} s after the heal, "
         f"serving again {serving:.1f} s later (put then get on it: {', '.join(attempts)})")

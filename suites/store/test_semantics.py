"""Store semantics every client relies on, with the documented return codes (mooncake-facts §2, §7.1)."""

from __future__ import annotations

import json
import time

import pytest

from pytest_mooncake import MasterHandle, MooncakeConfig, StoreClient
from pytest_mooncake.cluster.integrity import value_for

OBJECT_NOT_FOUND, INVALID_PARAMS, OBJECT_HAS_LEASE = -704, -600, -706


@pytest.fixture
def keys(mooncake_store: StoreClient, mooncake_run_id: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A key factory; every key it made is removed (force: reads hold leases) after the test."""
    made: list[str] = []

    def make(name: str) -> str:
        made.append(f"{mooncake_run_id}-{request.node.name}-{name}")
        return made[-1]

    yield make
    mooncake_store.batch_remove(made, True)


@pytest.mark.parametrize("size", [1, 4096, 1 << 20])
def test_put_get_round_trip_with_checksum(mooncake_store: StoreClient, keys, size: int) -> None:  # type: ignore[no-untyped-def]
    key = keys(f"v{size}")
    value = value_for(key, size)
    assert mooncake_store.put(key, value) == 0
    assert mooncake_store.get_size(key) == size
    assert mooncake_store.is_exist(key) == 1
    assert mooncake_store.get(key) == value


def _largest_room(master: MasterHandle) -> int:
    """Free bytes of the emptiest segment: an object lives whole in one segment."""
    detail = json.loads(master.admin("/get_segments_detail").body)
    return max(int(s["size_bytes"]) - int(s["allocator_used_bytes"]) for s in detail["segments"])


def test_largest_object_the_buffer_allows(mooncake_store: StoreClient, mooncake_config: MooncakeConfig,
                                          mooncake_master: MasterHandle, keys) -> None:  # type: ignore[no-untyped-def]
    # The local buffer also holds transfer metadata, so stay one page under its size. On an
    # attached cluster with small, partly used segments, take half the emptiest one's room
    # (the allocator needs slack) so the test does not depend on other tenants' data.
    size = min(mooncake_config.local_buffer_size - 4096, _largest_room(mooncake_master) // 2)
    key = keys("largest")
    assert mooncake_store.put(key, value_for(key, size)) == 0
    assert mooncake_store.get(key) == value_for(key, size)


def test_misses_empty_and_oversized_values(mooncake_store: StoreClient, mooncake_config: MooncakeConfig, keys) -> None:  # type: ignore[no-untyped-def]
    missing = keys("missing")
    assert mooncake_store.get(missing) == b""
    assert mooncake_store.is_exist(missing) == 0
    assert mooncake_store.get_size(missing) == OBJECT_NOT_FOUND
    assert mooncake_store.remove(missing) == OBJECT_NOT_FOUND
    assert mooncake_store.put(keys("empty"), b"") == INVALID_PARAMS
    assert mooncake_store.put(keys("huge"), b"x" * (mooncake_config.local_buffer_size + 1)) == INVALID_PARAMS


def test_put_never_overwrites_but_upsert_does(mooncake_store: StoreClient, keys) -> None:  # type: ignore[no-untyped-def]
    key = keys("overwrite")
    assert mooncake_store.put(key, b"v1") == 0
    assert mooncake_store.put(key, b"v2-longer") == 0
    assert mooncake_store.get(key) == b"v1"
    assert mooncake_store.upsert(key, b"v3") == 0
    assert mooncake_store.get(key) == b"v3"


def test_batch_operations(mooncake_store: StoreClient, keys) -> None:  # type: ignore[no-untyped-def]
    names = [keys(f"b{i}") for i in range(8)]
    values = [value_for(name, 1000 + i) for i, name in enumerate(names)]
    assert mooncake_store.put_batch(names, values) == 0
    assert mooncake_store.get_batch(names) == values
    assert mooncake_store.batch_is_exist([*names, keys("nope")]) == [1] * 8 + [0]
    newer = [value_for(name, 2000 + i, version=1) for i, name in enumerate(names)]
    assert mooncake_store.upsert_batch(names[:4], newer[:4]) == 0
    assert mooncake_store.get_batch(names) == newer[:4] + values[4:], "upsert_batch must replace exactly its keys"
    assert mooncake_store.batch_remove([*names[:2], keys("nope")], True) == [0, 0, OBJECT_NOT_FOUND]
    assert mooncake_store.get_batch(names[:3]) == [b"", b"", newer[2]]


def test_remove_all_skips_leased_objects_unless_forced(small_store: StoreClient, mooncake_run_id: str) -> None:
    """remove_all empties the whole cluster, so it only ever runs on a private spawned one."""
    small_store.remove_all(True)  # start empty, whatever earlier tests left on this private cluster
    names = [f"{mooncake_run_id}-removeall-{i}" for i in range(3)]
    for name in names:
        assert small_store.put(name, value_for(name, 512)) == 0
    assert small_store.get(names[0]) == value_for(names[0], 512)  # the read leases it
    assert small_store.remove_all() == 2, "remove_all must remove the two unleased objects and skip the leased one"
    assert small_store.batch_is_exist(names) == [1, 0, 0]
    assert small_store.remove_all(True) == 1, "remove_all(force=True) must remove the leased object too"
    assert small_store.batch_is_exist(names) == [0, 0, 0]


def test_a_read_holds_a_lease_until_it_expires(mooncake_store: StoreClient, mooncake_master: MasterHandle, keys) -> None:  # type: ignore[no-untyped-def]
    key = keys("leased")
    assert mooncake_store.put(key, b"leased") == 0
    assert mooncake_store.get(key) == b"leased"
    assert mooncake_store.remove(key) == OBJECT_HAS_LEASE
    deadline = time.monotonic() + mooncake_master.lease_ttl + 5
    while (code := mooncake_store.remove(key)) == OBJECT_HAS_LEASE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert code == 0, f"remove still answered {code} {mooncake_master.lease_ttl + 5:g} s after the last read"


def test_put_grants_no_lease(mooncake_store: StoreClient, keys) -> None:  # type: ignore[no-untyped-def]
    key = keys("fresh")
    assert mooncake_store.put(key, b"fresh") == 0
    assert mooncake_store.remove(key) == 0


def test_get_into_a_registered_buffer(mooncake_store: StoreClient, keys) -> None:  # type: ignore[no-untyped-def]
    key = keys("zero-copy")
    value = value_for(key, 65536)
    assert mooncake_store.put(key, value) == 0
    assert mooncake_store.call("get_into", key, 65536) == (65536, value)
    assert mooncake_store.call("get_into", key, 1)[0] == INVALID_PARAMS, "a buffer too small must be refused"
    assert mooncake_store.call("get_into", keys("absent"), 4096)[0] == OBJECT_NOT_FOUND

"""The checker catches every fault planted in a deliberately faulty in-memory store."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from pytest_mooncake.cluster.integrity import CORRUPT, EXACT, LOST, MISS, PHANTOM, STALE, Checker, value_for


class FaultyStore:
    """An in-memory store with one planted fault: stale bytes, lost writes, phantom keys or bit flips."""

    def __init__(self, fault: str | None) -> None:
        self.fault = fault
        self.data: dict[str, bytes] = {}
        self.history: dict[str, bytes] = {}

    def upsert(self, key: str, value: bytes) -> int:
        if self.fault == "lost_write":
            return 0
        if self.fault == "stale" and key in self.data:
            self.history[key] = self.data[key]
        self.data[key] = value
        return 0

    def get(self, key: str) -> bytes:
        if self.fault == "phantom" and key not in self.data:
            return value_for("someone-else", 64)
        if self.fault == "stale" and key in self.history:
            return self.history[key]
        value = self.data.get(key, b"")
        if self.fault == "bitflip" and value:
            return bytes([value[0] ^ 1]) + value[1:]
        return value


def _exercise(store: FaultyStore, checker: Checker) -> set[str]:
    for key in ("a", "b"):
        store.upsert(key, checker.wrote(key, 256))
    store.upsert("a", checker.wrote("a", 256))  # a second version of a
    return {checker.check(key, store.get(key)) for key in ("a", "b", "never-written")}


@pytest.mark.parametrize(
    ("fault", "caught", "eviction_possible"),
    [
        ("stale", STALE, False), ("lost_write", LOST, False), ("phantom", PHANTOM, False), ("bitflip", CORRUPT, False),
        # Eviction excuses a miss, never wrong bytes. (A lost write then looks like an eviction:
        # the eviction suite bounds misses by the master's evicted-key count instead.)
        ("stale", STALE, True), ("phantom", PHANTOM, True), ("bitflip", CORRUPT, True),
    ],
)
def test_each_planted_fault_is_caught(fault: str, caught: str, eviction_possible: bool) -> None:
    checker = Checker(eviction_possible=eviction_possible)
    outcomes = _exercise(FaultyStore(fault), checker)
    assert caught in outcomes
    assert checker.problems()


def test_a_correct_store_passes() -> None:
    checker = Checker(eviction_possible=False)
    assert _exercise(FaultyStore(None), checker) == {EXACT, MISS}
    assert checker.problems() == {}


def test_under_eviction_a_miss_is_clean_but_wrong_bytes_are_not() -> None:
    checker = Checker(eviction_possible=True)
    checker.wrote("k", 10)
    assert checker.check("k", b"") == MISS
    assert checker.check("k", b"x" * 10) == CORRUPT


def test_values_are_the_sha256_stream_of_key_and_version() -> None:
    seed = hashlib.sha256(b"k#0").digest()
    assert value_for("k", 70) == (seed + seed + seed)[:70] and len(value_for("k", 3)) == 3
    assert value_for("k", 40, 2) == (hashlib.sha256(b"k#2").digest() * 2)[:40]


def test_each_write_is_a_new_version() -> None:
    checker = Checker()
    assert checker.wrote("k", 40) == value_for("k", 40, 0) and checker.written == {"k": (40, 0)}
    assert checker.wrote("k", 50) == value_for("k", 50, 1) and checker.written == {"k": (50, 1)}


def test_any_older_version_is_stale() -> None:
    checker = Checker(eviction_possible=False)
    for _ in range(3):
        checker.wrote("k", 32)
    assert [checker.check("k", value_for("k", 32, v)) for v in (0, 1, 2)] == [STALE, STALE, EXACT]


def test_a_removed_key_is_forgotten() -> None:
    checker = Checker(eviction_possible=False)
    checker.wrote("k", 16)
    checker.removed("k")
    checker.removed("never-written")
    assert checker.written == {} and checker.check("k", b"") == MISS


def test_the_tally_counts_every_read() -> None:
    checker = Checker(eviction_possible=False)
    checker.wrote("k", 8)
    for got in (value_for("k", 8), value_for("k", 8), b"", b"junk0000", b"junk0000"):
        checker.check("k", got)
    assert checker.tally == Counter({EXACT: 2, LOST: 1, CORRUPT: 2})
    assert checker.problems() == {LOST: 1, CORRUPT: 2}

"""The checker catches every fault planted in a deliberately faulty in-memory store."""

from __future__ import annotations

import pytest

from pytest_mooncake.integrity import CORRUPT, EXACT, LOST, MISS, PHANTOM, STALE, Checker, value_for


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

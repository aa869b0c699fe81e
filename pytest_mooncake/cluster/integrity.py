"""Checksummed values and a checker that classifies every read.

A value is derived from its key and version alone (sha256 stream), so a read can be
verified without keeping the bytes: it is *exact* (the latest version), a clean *miss*
(``b''``: evicted, expired or never written), *stale* (an older version of the key),
*phantom* (bytes for a key never written) or *corrupt* (anything else). Under eviction a
miss is allowed; stale, phantom and corrupt never are, and a miss is a *lost write* when
nothing could have evicted the key.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["BAD", "Checker", "value_for"]

EXACT, MISS, STALE, PHANTOM, CORRUPT, LOST = "exact", "miss", "stale", "phantom", "corrupt", "lost_write"
BAD = (STALE, PHANTOM, CORRUPT, LOST)


def value_for(key: str, size: int, version: int = 0) -> bytes:
    seed = hashlib.sha256(f"{key}#{version}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class Checker:
    """The model of what the store should hold: key -> (size, version), plus a tally."""

    eviction_possible: bool = True
    written: dict[str, tuple[int, int]] = field(default_factory=dict)
    tally: Counter[str] = field(default_factory=Counter)

    def wrote(self, key: str, size: int) -> bytes:
        """Record a successful write of a new version; return the bytes to write."""
        version = self.written[key][1] + 1 if key in self.written else 0
        self.written[key] = (size, version)
        return value_for(key, size, version)

    def removed(self, key: str) -> None:
        self.written.pop(key, None)

    def check(self, key: str, got: bytes) -> str:
        outcome = self._classify(key, got)
        self.tally[outcome] += 1
        return outcome

    def _classify(self, key: str, got: bytes) -> str:
        if key not in self.written:
            return MISS if not got else PHANTOM
        size, version = self.written[key]
        if not got:
            return MISS if self.eviction_possible else LOST
        if got == value_for(key, size, version):
            return EXACT
        if any(got == value_for(key, len(got), older) for older in range(version)):
            return STALE
        return CORRUPT

    def problems(self) -> dict[str, int]:
        return {kind: self.tally[kind] for kind in BAD if self.tally[kind]}

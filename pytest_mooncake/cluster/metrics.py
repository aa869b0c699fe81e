"""The master's Prometheus endpoint, parsed by ``scrape``.

Counters on the master are cumulative for its lifetime, so a test reads
*deltas* between two snapshots, never raw values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_mooncake.cluster.nodes import MasterHandle
from pytest_mooncake.runtime.probes import expect_2xx
from pytest_mooncake.runtime.scrape import Quiescence, sample_sums, wait_until_quiescent

__all__ = ["SAFE_FILL_RATIO"]

# The master evicts once the pool is fuller than its --eviction_high_watermark_ratio (0.9 by
# default), and eviction is global: anyone's keys go. An attached master does not expose its
# watermark, and its other tenants keep writing, so our writes stop well below it.
SAFE_FILL_RATIO = 0.8


@dataclass(frozen=True)
class Snapshot:
    """Sample name -> value, labels summed (``segment_allocated_bytes`` over segments)."""

    values: Mapping[str, float]

    def __getitem__(self, name: str) -> float:
        if name not in self.values:
            raise KeyError(
                f"metric {name!r} is not exposed by this master; "
                f"it exposes {len(self.values)} samples, e.g. {sorted(self.values)[:5]}"
            )
        return self.values[name]

    def get(self, name: str, default: float = 0.0) -> float:
        return self.values.get(name, default)

    def write_headroom(self, ratio: float = SAFE_FILL_RATIO) -> int:
        """Bytes that can be written before the pool is ``ratio`` full: a write that fits evicts nothing."""
        return max(0, int(ratio * self["master_total_capacity_bytes"] - self["master_allocated_bytes"]))

    def delta(self, before: Snapshot) -> dict[str, float]:
        """After minus before for every sample present in both."""
        return {name: value - before.values[name] for name, value in self.values.items() if name in before.values}


def parse_metrics(text: str) -> Snapshot:
    """Samples by the names the master shows (tests use those), labels summed."""
    return Snapshot(sample_sums(text))


class MasterMetrics:
    """Reads a master's ``/metrics``; ``baseline`` is the snapshot at fixture setup."""

    def __init__(self, master: MasterHandle) -> None:
        self.master = master
        self.baseline = self.snapshot()

    def snapshot(self) -> Snapshot:
        """The master's samples now; OSError when its /metrics does not answer 2xx."""
        return parse_metrics(expect_2xx(self.master.admin("/metrics"), self.master.metrics_url + "/metrics"))

    def delta(self, before: Snapshot | None = None) -> dict[str, float]:
        """Change of every sample since ``before`` (default: since the test started)."""
        return self.snapshot().delta(before or self.baseline)

    def read(self, names: Sequence[str]) -> dict[str, float | None]:
        """``names`` from one snapshot; None for one the master does not expose."""
        snapshot = self.snapshot()
        return {name: snapshot.values.get(name) for name in names}

    def settled(self, names: Sequence[str] = ("master_key_count",), *, timeout_s: float = 30.0) -> Quiescence:
        """``names`` once they have not changed for a second: connectors save KV and the master
        drops a gone client's keys in the background. Not settled after ``timeout_s`` is no error:
        the caller judges the values it gets."""
        return wait_until_quiescent(lambda: self.read(names), interval_s=0.25, stable_for_s=1.0, timeout_s=timeout_s)

"""The master's Prometheus endpoint, read with prometheus_client's parser.

Counters on the master are cumulative for its lifetime, so a test reads
*deltas* between two snapshots, never raw values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .cluster import MasterHandle

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
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names = {sample.name}
            # The parser appends _total to counters; the master exposes some without it
            # (master_evicted_key_count), and tests should use the names the master shows.
            if family.type == "counter" and sample.name == family.name + "_total":
                names.add(family.name)
            for name in names:
                values[name] = values.get(name, 0.0) + float(sample.value)
    return Snapshot(values)


class MasterMetrics:
    """Reads a master's ``/metrics``; ``baseline`` is the snapshot at fixture setup."""

    def __init__(self, master: MasterHandle) -> None:
        self.master = master
        self.baseline = self.snapshot()

    def snapshot(self) -> Snapshot:
        response = self.master.admin("/metrics")
        if response.status != 200:
            raise RuntimeError(
                f"{self.master.metrics_url}/metrics answered HTTP {response.status}: {response.body[:200]}"
            )
        return parse_metrics(response.body)

    def delta(self, before: Snapshot | None = None) -> dict[str, float]:
        """Change of every sample since ``before`` (default: since the test started)."""
        return self.snapshot().delta(before or self.baseline)

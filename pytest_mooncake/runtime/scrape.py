"""Prometheus text pages: the one parser of them, and waiting for counters on them to settle.

The master's ``/metrics`` (``metrics.Snapshot``) and vLLM's and LMCache's counters
(``serving.counters``) are both read here. This module needs nothing beyond prometheus_client,
so the base plugin can load it without the serving extra.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


def sample_sums(text: str, key: Callable[[str], str] = str, *, by: str | None = None) -> dict[str, float]:
    """Every sample of a Prometheus text page, summed over its labels, under ``key(name)``; with
    ``by``, only the samples carrying that label, summed per value under ``key(name){by=value}``.

    prometheus_client names a counter's samples ``<family>_total`` even where the page shows the
    bare family name (the master's ``master_evicted_key_count``), so a counter is kept under both
    names; a ``key`` that maps them to one form counts it once. ``_created`` samples are when a
    series started, a timestamp that means nothing summed, and are left out.
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if by is not None and by not in sample.labels:
                continue
            split = "" if by is None else f"{{{by}={sample.labels[by]}}}"
            names = {key(sample.name) + split}
            if family.type == "counter" and sample.name == family.name + "_total":
                names.add(key(family.name) + split)
            for name in names:
                values[name] = values.get(name, 0.0) + float(sample.value)
    return values


@dataclass(frozen=True)
class Quiescence:
    """Whether the counters stopped moving before the timeout, and their last values."""

    settled: bool
    values: dict[str, float | None]
    waited_s: float
    polls: int


def wait_until_quiescent(
    read: Callable[[], Mapping[str, float | None]],
    keys: Sequence[str] | None = None,
    *,
    interval_s: float = 0.5,
    stable_for_s: float = 2.0,
    timeout_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Quiescence:
    """Poll ``read()`` until ``keys`` (default: every counter it returns) have not changed for
    ``stable_for_s`` seconds, or ``timeout_s`` passes.

    Used before a hit round, so KV saves still draining in the background (a store counter still
    growing) do not turn intended hits into misses. Read errors propagate: a server that stops
    answering has not settled.
    """
    started = clock()
    values = dict(read())
    polls = 1
    stable_since = started
    while True:
        now = clock()
        if now - stable_since >= stable_for_s:
            return Quiescence(True, values, now - started, polls)
        if now - started >= timeout_s:
            return Quiescence(False, values, now - started, polls)
        sleep(min(interval_s, max(0.0, timeout_s - (now - started))))
        latest = dict(read())
        polls += 1
        watched = keys if keys is not None else latest.keys() | values.keys()
        if any(latest.get(key) != values.get(key) for key in watched):
            stable_since = clock()
        values = latest

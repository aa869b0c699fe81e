"""Server-side counters from a Prometheus ``/metrics`` page: snapshots, deltas, quiescence.

Names are matched tolerantly: a counter may be asked for with or without ``_total`` and with
``:`` or ``_`` after its namespace (``vllm:prefix_cache_hits_total`` == ``vllm_prefix_cache_hits``),
and samples of one name with different labels (engines, models) are summed. A counter can also
be given as a tuple of alternative names, the first present wins, for names that changed between
releases (``COUNTERS`` holds the ones the serving suites use).

The page is fetched through a ``fetch(url) -> str`` callable, so a caller can read a server inside
a network namespace; the default is a plain HTTP GET with a timeout.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Fetch = Callable[[str], str]
CounterNames = str | Sequence[str]

# Counters that prove reuse, keyed by the name the suites use. Older vLLM releases prefixed the
# local prefix-cache counters with ``gpu_``.
COUNTERS: dict[str, tuple[str, ...]] = {
    "prefix_cache_queries": ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    "external_prefix_cache_queries": ("vllm:external_prefix_cache_queries",),
    "external_prefix_cache_hits": ("vllm:external_prefix_cache_hits",),
    "prompt_tokens": ("vllm:prompt_tokens",),
    "lmcache_requested_tokens": ("lmcache:num_requested_tokens",),
    "lmcache_hit_tokens": ("lmcache:num_hit_tokens",),
    "lmcache_stored_tokens": ("lmcache:num_stored_tokens",),
}

# Samples that describe a counter rather than count something.
_SKIPPED_SUFFIXES = ("_created",)


def canonical(name: str) -> str:
    """The form two spellings of one metric share."""
    return name.replace(":", "_").removesuffix("_total")


def fetch_text(url: str, timeout_s: float = 10.0) -> str:
    """GET ``url`` and return its body; errors say which URL failed and why."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - URL comes from the test setup
            return response.read().decode("utf-8", errors="replace")
    except OSError as exc:
        raise OSError(f"could not read metrics from {url}: {exc}; is the server up and serving /metrics there?") from exc


def parse_samples(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text page, labels summed, keyed by ``canonical`` name."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(_SKIPPED_SUFFIXES):
                continue
            key = canonical(sample.name)
            values[key] = values.get(key, 0.0) + float(sample.value)
    return values


def pick(samples: Mapping[str, float], names: CounterNames) -> float | None:
    """The value of the first of ``names`` present in ``samples`` (parsed by ``parse_samples``)."""
    for name in (names,) if isinstance(names, str) else names:
        value = samples.get(canonical(name))
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class MetricsReader:
    """Reads named counters from one ``/metrics`` URL; call it to get a snapshot."""

    url: str
    counters: Mapping[str, CounterNames]
    fetch: Fetch = fetch_text

    def __call__(self) -> dict[str, float | None]:
        samples = parse_samples(self.fetch(self.url))
        return {key: pick(samples, names) for key, names in self.counters.items()}


def deltas(before: Mapping[str, float | None], after: Mapping[str, float | None], *, where: str = "") -> dict[str, float]:
    """``after - before`` for each counter present in both snapshots (absent ones are left out).

    A decrease means the server restarted between the snapshots, which would make any delta a
    lie, so it raises.
    """
    result: dict[str, float] = {}
    for key, old in before.items():
        new = after.get(key)
        if old is None or new is None:
            continue
        if new < old:
            raise ValueError(f"counter {key} went down from {old:g} to {new:g}{' at ' + where if where else ''}: "
                             "the server restarted between the two reads; repeat the measurement on a stable server")
        result[key] = new - old
    return result


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

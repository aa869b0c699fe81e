"""Server-side counters from a Prometheus ``/metrics`` page: snapshots, deltas, quiescence.

Names are matched tolerantly: a counter may be asked for with or without ``_total`` and with
``:`` or ``_`` after its namespace (``vllm:prefix_cache_hits_total`` == ``vllm_prefix_cache_hits``),
and samples of one name with different labels (engines, models) are summed. A counter can also
be given as a tuple of alternative names, the first present wins, for names that changed between
releases (``COUNTERS`` holds the ones the serving suites use).

The page is fetched through a ``fetch(url) -> str`` callable, so a caller can read a server inside
a network namespace or send credentials; the default is a plain HTTP GET with a timeout. The page
is parsed, and counters are waited on, by ``pytest_mooncake.runtime.scrape``, which the master's metrics
share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pytest_mooncake.runtime.probes import http_get_text
from pytest_mooncake.runtime.scrape import Quiescence, sample_sums, wait_until_quiescent

__all__ = ["COUNTERS", "PHASES", "MetricsReader", "Quiescence", "canonical", "deltas", "parse_samples", "pick",
           "wait_until_quiescent"]

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

# Histograms (sum and count) that split a round's TTFT (``qualify.breakdown``): vLLM's request
# phases, and the Mooncake store connector's KV loads (its ``operation`` label told apart).
PHASES: dict[str, tuple[str, ...]] = {
    f"{part}_{end}": (f"{metric}_{end}",)
    for part, metric in (("server_ttft_s", "vllm:time_to_first_token_seconds"),
                         ("queue_s", "vllm:request_queue_time_seconds"),
                         ("prefill_s", "vllm:request_prefill_time_seconds"))
    for end in ("sum", "count")
} | {f"kv_load_s_{end}": (f"vllm:mooncake_store_operation_time_seconds_{end}{{operation=load_get}}",)
     for end in ("sum", "count")}


def canonical(name: str) -> str:
    """The form two spellings of one metric share."""
    return name.replace(":", "_").removesuffix("_total")


def parse_samples(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text page, labels summed, keyed by ``canonical`` name; samples
    with an ``operation`` label also per operation, as ``name{operation=...}``."""
    return sample_sums(text, key=canonical) | sample_sums(text, key=canonical, by="operation")


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
    fetch: Fetch = http_get_text

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

"""Replay a Mooncake trace against an endpoint: its timing, its prefix sharing, its lengths.

Prompts are synthesized block by block from the hash ids (equal ids, identical token
blocks) and sent as token-id prompts at the trace's timestamps (optionally sped up). A
``scale`` shrinks every 512-token block by the same factor so a small server can replay a
long-context trace; requests that still exceed the server's context are skipped and
counted. Beside each request's measured ``cached_tokens`` stands the prediction: the
tokens of its leading blocks seen in earlier requests, rounded down to the server's KV
block size (a server caches whole blocks only). The server's prefix-cache counters are read
before and after (once they stop moving), so each cache tier's measured hits stand beside the
prompts that were sent, in the order sent, for ``pytest_mooncake.tools.tiers`` to predict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.qualify.protocol import server_counters
from pytest_mooncake.qualify.traces import BLOCK_TOKENS, TraceRecord, prompt_ids, schedule, theoretical_hit_ratio
from pytest_mooncake.runtime.probes import http_request
from pytest_mooncake.serving import RequestRecord, RequestSpec, Timestamps, run_requests, wait_until_quiescent
from pytest_mooncake.serving.load import OnRecord

__all__ = ["ReplayResult", "replay", "replay_prompts", "replayable"]

# The counters a replay reports the change of: vLLM's own prefix cache, the KV connector's
# (Mooncake) hits, and the prompt tokens they are shares of; all in tokens.
TIER_COUNTERS = ("prefix_cache_hits", "external_prefix_cache_hits", "prompt_tokens")


def server_block_size(endpoint: Endpoint, default: int = 16) -> int:
    """The KV block size vLLM reports in ``vllm:cache_config_info``; ``default`` if it does not."""
    try:
        body = http_request(endpoint.root_url + "/metrics", timeout=10, headers=endpoint.headers()).body
    except OSError:
        return default
    match = re.search(r'vllm:cache_config_info\{[^}]*block_size="(\d+)"', body)
    return int(match.group(1)) if match else default


@dataclass(frozen=True)
class ReplayResult:
    records: list[RequestRecord]
    predicted_cached: list[int]
    skipped: int
    theoretical_hit_ratio: float
    # What was sent, in the order sent (``records`` follow it): each prompt's token ids and the
    # send offset (seconds from the first) its trace timestamp gave, for a simulator to replay.
    prompts: list[tuple[int, ...]] = field(default_factory=list)
    offsets_s: list[float] = field(default_factory=list)
    # How much each of ``TIER_COUNTERS`` grew over the replay; None where the server has no such counter.
    counters: dict[str, float | None] = field(default_factory=dict)
    counters_settled: bool = True  # False: they still moved when the wait for them ended

    @property
    def local_hit_tokens(self) -> float | None:
        """Prompt tokens vLLM's own prefix cache served (``vllm:prefix_cache_hits``)."""
        return self.counters.get("prefix_cache_hits")

    @property
    def external_hit_tokens(self) -> float | None:
        """Prompt tokens the KV connector loaded, from Mooncake (``vllm:external_prefix_cache_hits``)."""
        return self.counters.get("external_prefix_cache_hits")

    @property
    def measured_cached(self) -> int:
        return sum(r.cached_tokens or 0 for r in self.records if r.ok)

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens or 0 for r in self.records if r.ok)


def predict_cached(records: Sequence[TraceRecord], lengths: Sequence[int], block_tokens: int, server_block: int, salt_tokens: int) -> list[int]:
    seen: set[int] = set()
    predictions = []
    for record, length in zip(records, lengths, strict=True):
        leading = 0
        for block in record.hash_ids:
            if block not in seen:
                break
            leading += 1
        # The salt block is shared by every prompt of this run once the first was sent.
        reusable = (salt_tokens if predictions else 0) + leading * block_tokens
        predictions.append(min(reusable, length - 1) // server_block * server_block)
        seen.update(record.hash_ids)
    return predictions


def replayable(records: Sequence[TraceRecord], salt_tokens: int, *, max_model_len: int, scale: int = 1,
               max_tokens_cap: int = 16) -> list[TraceRecord]:
    """The records whose scaled prompt and answer fit the server's context."""
    return [r for r in records if salt_tokens + r.input_length // scale + min(r.output_length, max_tokens_cap) <= max_model_len]


def replay_prompts(records: Sequence[TraceRecord], vocab: Sequence[int], salt: Sequence[int], *, max_model_len: int,
                   scale: int = 1, max_tokens_cap: int = 16) -> list[tuple[int, ...]]:
    """The token ids ``replay`` sends for ``records`` (those that fit the server's context)."""
    kept = replayable(records, len(salt), max_model_len=max_model_len, scale=scale, max_tokens_cap=max_tokens_cap)
    return [(*salt, *prompt_ids(r, vocab, scale=scale)) for r in kept]


def replay(
    endpoint: Endpoint,
    records: Sequence[TraceRecord],
    vocab: Sequence[int],
    salt: Sequence[int],
    *,
    max_model_len: int,
    scale: int = 1,
    speed: float = 1.0,
    max_in_flight: int | None = None,
    max_tokens_cap: int = 16,
    timeout: float = 300.0,
    on_record: OnRecord | None = None,
) -> ReplayResult:
    block_tokens = BLOCK_TOKENS // scale
    kept = replayable(records, len(salt), max_model_len=max_model_len, scale=scale, max_tokens_cap=max_tokens_cap)
    ids = replay_prompts(kept, vocab, salt, max_model_len=max_model_len, scale=scale, max_tokens_cap=max_tokens_cap)
    prompts = [
        endpoint.prepare(RequestSpec(f"trace-line-{r.line}", "trace_replay", "replay", prompt=prompt,
                                     max_tokens=min(r.output_length, max_tokens_cap)), temperature=0.0)
        for r, prompt in zip(kept, ids, strict=True)
    ]
    offsets = tuple(offset for offset, _ in schedule(kept, speed=speed))
    read_counters = server_counters(endpoint)
    before = read_counters()
    results = run_requests(endpoint.client_config(timeout), prompts, Timestamps(offsets, max_in_flight), on_record=on_record)
    # vLLM publishes a step's counters after answering it: wait until they stop moving.
    after = wait_until_quiescent(read_counters, TIER_COUNTERS, interval_s=0.25, stable_for_s=1.0, timeout_s=30.0)
    counters = {key: _grown(before.get(key), after.values.get(key)) for key in TIER_COUNTERS}
    predicted = predict_cached(kept, [len(p.prompt or ()) for p in prompts], block_tokens, server_block_size(endpoint), len(salt))
    return ReplayResult(results, predicted, len(records) - len(kept), theoretical_hit_ratio(kept), ids, list(offsets),
                        counters, after.settled)


def _grown(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before

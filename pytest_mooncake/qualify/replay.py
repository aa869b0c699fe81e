"""Replay a Mooncake trace against an endpoint: its timing, its prefix sharing, its lengths.

Prompts are synthesized block by block from the hash ids (equal ids, identical token
blocks) and sent as token-id prompts at the trace's timestamps (optionally sped up). A
``scale`` shrinks every 512-token block by the same factor so a small server can replay a
long-context trace; requests that still exceed the server's context are skipped and
counted. Beside each request's measured ``cached_tokens`` stands the prediction: the
tokens of its leading blocks seen in earlier requests, rounded down to the server's KV
block size (a server caches whole blocks only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.qualify.traces import BLOCK_TOKENS, TraceRecord, prompt_ids, schedule, theoretical_hit_ratio
from pytest_mooncake.runtime.probes import http_request
from pytest_mooncake.serving import RequestRecord, RequestSpec, Timestamps, run_requests
from pytest_mooncake.serving.load import OnRecord

__all__ = ["replay", "replayable"]


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
    prompts = [
        endpoint.prepare(RequestSpec(f"trace-line-{r.line}", "trace_replay", "replay", prompt=(*salt, *prompt_ids(r, vocab, scale=scale)),
                                     max_tokens=min(r.output_length, max_tokens_cap)), temperature=0.0)
        for r in kept
    ]
    offsets = tuple(offset for offset, _ in schedule(kept, speed=speed))
    results = run_requests(endpoint.client_config(timeout), prompts, Timestamps(offsets, max_in_flight), on_record=on_record)
    predicted = predict_cached(kept, [len(p.prompt or ()) for p in prompts], block_tokens, server_block_size(endpoint), len(salt))
    return ReplayResult(results, predicted, len(records) - len(kept), theoretical_hit_ratio(kept))

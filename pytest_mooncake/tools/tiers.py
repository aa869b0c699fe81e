"""What each cache tier of one vLLM should serve for an exact request sequence, and how close a live run came.

The tiered serving path is one vLLM with its own prefix cache (``local_blocks`` usable
blocks: vLLM keeps one of its KV blocks as a null block) and a Mooncake pool behind it
(``pool_blocks``). For each request, in the order sent, one at a time:

- the local cache serves the leading blocks it holds (``vllm:prefix_cache_hits``);
- the pool serves the blocks after those, up to the end of its own leading run from the
  prompt's start (``vllm:external_prefix_cache_hits``; the store connector looks a prompt up
  from its first block and loads what lies beyond the local hit);
- neither serves the block holding the prompt's last token: at most
  ``(prompt_tokens - 1) // block_tokens`` blocks hit (vLLM must compute one token to sample).

Then every block the request occupied goes into the local LRU cache, tail first, so the
prompt's head is its most recent block (vLLM frees a request's blocks in reverse): its
whole prompt blocks, then blocks no prompt can reuse, as many as its partial prompt tail
and its generated tokens filled (``input_length + output_length - 1`` tokens have KV: the
last generated token is never computed). Only whole prompt blocks go into the pool (the
store connector keeps one key per whole block of the prompt).

Counts are in tokens, as vLLM's counters are: a hit block is ``block_tokens`` tokens.
``qualify.tiers`` splits what a round measured by tier; this module predicts that split.

The caches are the simulator's (``simulator.LruCache``); prompts become ``TraceRecord``\\ s
with :func:`prompt_records` (chained hashes of whole blocks: equal prefixes, equal ids) and
a Mooncake JSONL trace with :func:`write_trace`, which ``pytest-mooncake simulate TRACE
--block-size 128 --tiers ...`` reads back to print the same prediction.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.qualify.capacity import MODELS, ModelShape
from pytest_mooncake.qualify.tiers import TIERS, within
from pytest_mooncake.qualify.traces import TraceRecord, leading_hits
from pytest_mooncake.tools.simulator import LruCache, touch_all

__all__ = ["SPAWNED_MODEL", "TIER_TOLERANCE", "TierCheck", "TierPrediction", "check_tiers", "pool_blocks_for",
           "predict_tiers", "prompt_records", "spawned_capacity", "write_trace"]

# How far a measured tier's hit ratio (share of prompt tokens) may lie from the prediction, in
# absolute terms: 1 point. The bundled trace replayed one request at a time (195 requests, 337,588
# prompt tokens) matched to the token: prefix-cache 57,856 local of 57,856 predicted; tiered
# 49,664 local and 8,192 Mooncake, both as predicted. What the model leaves out is timing (a
# store put still in flight when the next request looks its blocks up; Mooncake evicting
# otherwise than an LRU of the pool's size; a recomputed last block held twice): each moves a
# tier by about one request's blocks, ~0.5 point at this trace's mean of 1,700 tokens. A wider
# tolerance would pass the errors that matter here: a local cache that never evicts (+2.4 points
# local on tiered) or a Mooncake tier that serves nothing (-2.4 points) both miss by more than 1.
TIER_TOLERANCE = 0.01


def _block_hash(previous: int, tokens: Sequence[int]) -> int:
    digest = hashlib.blake2b(struct.pack(f"<q{len(tokens)}q", previous, *tokens), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # non-negative and within a signed 64-bit int, for any JSON reader


def prompt_hash_ids(prompt: Sequence[int], block_tokens: int = KV_BLOCK_TOKENS) -> tuple[int, ...]:
    """One id per started block of ``block_tokens``: the hash of the block's tokens chained with the
    previous block's id, so two prompts share an id exactly where they share every token up to
    that block's end. A partial last block gets one too (a trace needs it); it never hits."""
    if block_tokens <= 0:
        raise ValueError(f"block_tokens must be positive, got {block_tokens}")
    ids: list[int] = []
    previous = 0
    for start in range(0, len(prompt), block_tokens):
        previous = _block_hash(previous, prompt[start:start + block_tokens])
        ids.append(previous)
    return tuple(ids)


def prompt_records(prompts: Sequence[Sequence[int]], *, block_tokens: int = KV_BLOCK_TOKENS,
                   output_lengths: Sequence[int] | None = None,
                   timestamps_ms: Sequence[float] | None = None) -> list[TraceRecord]:
    """Token-id prompts as ``TraceRecord``\\ s in the order given: ``output_lengths`` are the tokens
    each generated (default 1), ``timestamps_ms`` when each was sent (default 0; non-decreasing)."""
    outputs = list(output_lengths) if output_lengths is not None else [1] * len(prompts)
    times = list(timestamps_ms) if timestamps_ms is not None else [0.0] * len(prompts)
    if len(outputs) != len(prompts) or len(times) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(outputs)} output lengths and {len(times)} timestamps")
    if any(later < earlier for earlier, later in zip(times, times[1:])):
        raise ValueError("timestamps_ms must not decrease: a trace is in arrival order")
    return [TraceRecord(line, float(at), len(prompt), int(output), prompt_hash_ids(prompt, block_tokens))
            for line, (prompt, output, at) in enumerate(zip(prompts, outputs, times, strict=True), start=1)]


def write_trace(records: Iterable[TraceRecord], path: Path) -> Path:
    """``records`` as a Mooncake JSONL trace (``load_trace(path, block_size)`` reads them back)."""
    lines = [json.dumps({"timestamp": r.timestamp_ms, "input_length": r.input_length,
                         "output_length": r.output_length, "hash_ids": list(r.hash_ids)}) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def pool_blocks_for(pool_bytes: int, model: ModelShape, block_tokens: int = KV_BLOCK_TOKENS) -> int:
    """Whole KV blocks of ``model`` that ``pool_bytes`` of Mooncake pool hold."""
    return pool_bytes // model.kv_bytes(block_tokens)


# The shape of the random-weight model every vLLM we spawn serves (``qualify.capacity.MODELS``).
SPAWNED_MODEL = "ci-tiny-llama"


def spawned_capacity(cache_blocks: int, pool_bytes: int = 0) -> tuple[int, int]:
    """(usable local blocks, Mooncake pool blocks) of a vLLM we spawned with a KV cache of
    ``cache_blocks`` blocks (vLLM keeps one as its null block) and ``pool_bytes`` of store nodes
    behind it, in 128-token blocks of ``SPAWNED_MODEL``'s KV."""
    return cache_blocks - 1, pool_blocks_for(pool_bytes, MODELS[SPAWNED_MODEL])


@dataclass(frozen=True)
class RequestTiers:
    line: int  # the record's line: in a trace written by ``write_trace``, its position in the sequence
    prompt_tokens: int
    local_tokens: int
    pool_tokens: int


@dataclass(frozen=True)
class TierPrediction:
    requests: tuple[RequestTiers, ...]
    local_blocks: int | None
    pool_blocks: int | None
    block_tokens: int

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.requests)

    @property
    def local_tokens(self) -> int:
        return sum(r.local_tokens for r in self.requests)

    @property
    def pool_tokens(self) -> int:
        return sum(r.pool_tokens for r in self.requests)

    @property
    def local_ratio(self) -> float:
        return self.local_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def pool_ratio(self) -> float:
        return self.pool_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def summary(self) -> str:
        def size(blocks: int | None) -> str:
            return "unbounded" if blocks is None else f"{blocks} blocks"

        return (f"{len(self.requests)} requests, {self.prompt_tokens} prompt tokens; local cache "
                f"{size(self.local_blocks)}, Mooncake pool {size(self.pool_blocks)} of {self.block_tokens} tokens: "
                f"local {self.local_tokens} tokens ({self.local_ratio:.1%}), "
                f"Mooncake {self.pool_tokens} tokens ({self.pool_ratio:.1%})")

    def to_dict(self) -> dict[str, object]:
        return {"local_blocks": self.local_blocks, "pool_blocks": self.pool_blocks, "block_tokens": self.block_tokens,
                "prompt_tokens": self.prompt_tokens, "local_tokens": self.local_tokens, "pool_tokens": self.pool_tokens,
                "local_ratio": self.local_ratio, "pool_ratio": self.pool_ratio,
                "requests": [asdict(r) for r in self.requests]}


def predict_tiers(records: Sequence[TraceRecord], *, local_blocks: int | None, pool_blocks: int | None,
                  block_tokens: int = KV_BLOCK_TOKENS) -> TierPrediction:
    """Local and Mooncake hit tokens of each request of ``records`` sent in order to one vLLM.

    ``local_blocks``: usable blocks of its own cache (0: prefix caching off; None: unbounded);
    ``pool_blocks``: blocks the Mooncake pool holds (0: no pool; None: unbounded). Each
    record's ``hash_ids`` are ``block_tokens`` blocks (``prompt_records`` makes them so).
    """
    for name, value in (("local_blocks", local_blocks), ("pool_blocks", pool_blocks)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 or None (unbounded), got {value}")
    if block_tokens <= 0:
        raise ValueError(f"block_tokens must be positive, got {block_tokens}")
    local = LruCache(local_blocks)
    pool = LruCache(pool_blocks) if pool_blocks != 0 else None
    # Blocks no prompt can reuse (partial tails, generated tokens) take ids no trace uses.
    scratch = min([0, *(h for r in records for h in r.hash_ids)]) - 1
    predicted = []
    for record in records:
        usable = max(0, record.input_length - 1) // block_tokens
        whole = record.hash_ids[: record.input_length // block_tokens]
        local_hit = min(leading_hits(record.hash_ids, local), usable)
        pooled = min(leading_hits(record.hash_ids, pool), usable) if pool is not None else 0
        pool_hit = max(0, pooled - local_hit)
        predicted.append(RequestTiers(record.line, record.input_length, local_hit * block_tokens, pool_hit * block_tokens))
        with_kv = record.input_length + max(0, record.output_length - 1)
        extra = -(-with_kv // block_tokens) - len(whole)
        touch_all(local, [*whole, *range(scratch, scratch - extra, -1)])
        scratch -= extra
        if pool is not None:
            touch_all(pool, whole)
    return TierPrediction(tuple(predicted), local_blocks, pool_blocks, block_tokens)


@dataclass(frozen=True)
class TierCheck:
    """One tier's measured hit ratio beside the predicted one."""

    tier: str  # one of qualify.tiers.TIERS: "local", "mooncake"
    measured: float | None  # None: the server does not export the tier's counter
    predicted: float
    tolerance: float = TIER_TOLERANCE

    @property
    def difference(self) -> float | None:
        return None if self.measured is None else self.measured - self.predicted

    @property
    def within(self) -> bool | None:
        """Whether the measured ratio lies within ``tolerance`` of the prediction; None: not measured."""
        return None if self.measured is None else within(self.measured, self.predicted, self.tolerance)

    @property
    def name(self) -> str:
        return "Mooncake" if self.tier == "mooncake" else self.tier

    def line(self) -> str:
        points = 100 * self.tolerance
        if self.measured is None:
            return (f"{self.name} tier: not measured (the server exports no counter for it), "
                    f"predicted {self.predicted:.1%} of prompt tokens")
        verdict = (f"within {points:g} point{'' if points == 1 else 's'}" if self.within else
                   f"off by {100 * abs(self.difference or 0.0):.1f} points, more than {points:g}")
        return f"{self.name} tier: measured {self.measured:.1%} of prompt tokens, predicted {self.predicted:.1%} ({verdict})"

    def to_dict(self) -> dict[str, object]:
        return {"tier": self.tier, "measured": self.measured, "predicted": self.predicted, "tolerance": self.tolerance,
                "within": self.within}


def check_tiers(prediction: TierPrediction, *, local_tokens: float | None, pool_tokens: float | None,
                prompt_tokens: float | None = None, tolerance: float = TIER_TOLERANCE) -> list[TierCheck]:
    """Measured hit tokens per tier (e.g. deltas of ``vllm:prefix_cache_hits`` and
    ``vllm:external_prefix_cache_hits``) over ``prompt_tokens`` (default: the prediction's),
    beside the predicted ratios: one ``TierCheck`` per tier, local first."""
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance is an absolute difference of hit ratios, from 0 to 1; got {tolerance}")
    total = prediction.prompt_tokens if prompt_tokens is None else prompt_tokens

    def ratio(tokens: float | None) -> float | None:
        return None if tokens is None else (tokens / total if total else 0.0)

    return [TierCheck(TIERS[0], ratio(local_tokens), prediction.local_ratio, tolerance),
            TierCheck(TIERS[1], ratio(pool_tokens), prediction.pool_ratio, tolerance)]

"""Mooncake FAST'25 request traces: load, validate, turn into exact token-id prompts.

A record is ``{"timestamp": ms, "input_length": tokens, "output_length": tokens,
"hash_ids": [...]}``, one hash id per block of 512 tokens. Every record must satisfy
``len(hash_ids) == ceil(input_length / block_size)``: tools that assume 16-token blocks
silently send prompts 32x too short, so a mismatch is refused, naming the line.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import MooncakeError

BLOCK_TOKENS = 512


class TraceFormatError(MooncakeError):
    pass


@dataclass(frozen=True)
class TraceRecord:
    line: int
    timestamp_ms: int
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def _check(path: Path, line: int, raw: object, block_size: int, previous_ms: int) -> TraceRecord:
    where = f"{path}:{line}"
    if not isinstance(raw, dict):
        raise TraceFormatError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    try:
        record = TraceRecord(line, int(raw["timestamp"]), int(raw["input_length"]), int(raw["output_length"]),
                             tuple(int(h) for h in raw["hash_ids"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TraceFormatError(f"{where}: needs integer timestamp, input_length, output_length and hash_ids ({exc!r})") from None
    expected = math.ceil(record.input_length / block_size)
    if len(record.hash_ids) != expected:
        implied = math.ceil(record.input_length / max(1, len(record.hash_ids)))
        raise TraceFormatError(
            f"{where}: {len(record.hash_ids)} hash_ids for input_length {record.input_length}, but "
            f"ceil({record.input_length}/{block_size}) = {expected}. The trace's blocks hold about {implied} "
            f"tokens, not {block_size}: pass the trace's block size (Mooncake traces use 512)."
        )
    if record.timestamp_ms < previous_ms:
        raise TraceFormatError(f"{where}: timestamp {record.timestamp_ms} ms goes back from {previous_ms} ms")
    return record


def load_trace(path: Path, block_size: int = BLOCK_TOKENS, first_n: int | None = None) -> list[TraceRecord]:
    records: list[TraceRecord] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if first_n is not None and len(records) >= first_n:
                break
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceFormatError(f"{path}:{line_no}: not JSON ({exc.msg} at column {exc.colno})") from None
            records.append(_check(path, line_no, raw, block_size, records[-1].timestamp_ms if records else 0))
    return records


def theoretical_hit_ratio(records: Sequence[TraceRecord]) -> float:
    """Share of blocks already seen as a prefix block of an earlier request (infinite cache).

    A block counts as reusable only while the request's prefix is unbroken: KV of a block
    depends on every token before it.
    """
    seen: set[tuple[int, ...]] = set()
    hits = total = 0
    for record in records:
        prefix_intact = True
        for end in range(1, len(record.hash_ids) + 1):
            key = record.hash_ids[:end]
            total += 1
            if prefix_intact and key in seen:
                hits += 1
            else:
                prefix_intact = False
            seen.add(key)
    return hits / total if total else 0.0


def block_tokens(hash_id: int, length: int, vocab: Sequence[int]) -> list[int]:
    """The same ``length`` token ids for the same hash id, every time."""
    rng = random.Random(hash_id)
    return [vocab[rng.randrange(len(vocab))] for _ in range(length)]


def prompt_ids(record: TraceRecord, vocab: Sequence[int], block_size: int = BLOCK_TOKENS, scale: int = 1) -> list[int]:
    """Exactly ``input_length // scale`` tokens, block by block from the record's hash ids.

    ``scale`` shrinks every block by the same factor (e.g. 4: 128-token blocks) so a small
    server can replay a trace; sharing between requests is unchanged.
    """
    length = record.input_length // scale
    tokens_per_block = block_size // scale
    ids: list[int] = []
    for hash_id in record.hash_ids:
        ids.extend(block_tokens(hash_id, min(tokens_per_block, length - len(ids)), vocab))
    return ids


def schedule(records: Sequence[TraceRecord], speed: float = 1.0, max_minutes: float | None = None) -> Iterator[tuple[float, TraceRecord]]:
    """(send offset in seconds, record), offsets relative to the first record, divided by ``speed``."""
    if not records:
        return
    start = records[0].timestamp_ms
    for record in records:
        offset_min = (record.timestamp_ms - start) / 60000
        if max_minutes is not None and offset_min > max_minutes:
            return
        yield (record.timestamp_ms - start) / 1000 / speed, record

"""Mooncake FAST'25 request traces: load, validate, turn into exact token-id prompts.

A record is ``{"timestamp": ms, "input_length": tokens, "output_length": tokens,
"hash_ids": [...]}`` with one hash id per block of 512 tokens; ids are prefix hashes, so
two requests sharing leading ids can share the KV of those blocks. Every record must
satisfy ``len(hash_ids) == ceil(input_length / block_size)``: a tool that assumes 16-token
blocks silently sends prompts 32x too short, so a mismatch is refused, naming the line.

Prompts are lists of token ids (the completions API takes them), so lengths are exact
without a tokenizer: block ``h`` always becomes the same pseudo-random ids, and the last
block is cut so the prompt has exactly ``input_length`` tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_mooncake.errors import MooncakeError

__all__ = ["bundled_trace", "load_trace"]

BLOCK_TOKENS = 512
# Clear of the special tokens at the bottom and inside the CI model's 8,192-token vocabulary.
DEFAULT_TOKEN_IDS = range(100, 8000)
_BUNDLED_TRACE = "conversation_trace.jsonl"


def bundled_trace() -> Path:
    """The conversation trace the package ships: in the wheel, or fixtures/traces in a checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "bundled" / "traces" / _BUNDLED_TRACE
    return installed if installed.is_file() else package.parent / "fixtures" / "traces" / _BUNDLED_TRACE


class TraceFormatError(MooncakeError):
    """A trace file that does not follow the Mooncake record format."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path, self.line = path, line


@dataclass(frozen=True)
class TraceRecord:
    line: int  # 1-based line in the trace file, so results can point back at it
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def load_trace(path: Path, block_size: int = BLOCK_TOKENS, first_n: int | None = None) -> list[TraceRecord]:
    """Every record of a JSONL trace (or the first ``first_n``), validated; blank lines are skipped."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    records: list[TraceRecord] = []
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if first_n is not None and len(records) >= first_n:
                break
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceFormatError(path, line_no, f"not valid JSON ({exc.msg} at column {exc.colno}); "
                                       "each line must be one JSON object") from None
            previous = records[-1].timestamp_ms if records else None
            records.append(_record(path, line_no, raw, block_size, previous))
    return records


def _record(path: Path, line: int, raw: object, block_size: int, previous_ms: float | None) -> TraceRecord:
    if not isinstance(raw, dict):
        raise TraceFormatError(path, line, f"expected a JSON object, got {type(raw).__name__}")
    missing = [key for key in ("timestamp", "input_length", "output_length", "hash_ids") if key not in raw]
    if missing:
        raise TraceFormatError(path, line, f"missing {', '.join(missing)} (has {', '.join(sorted(raw)) or 'no keys'})")
    timestamp, hash_ids = raw["timestamp"], raw["hash_ids"]
    if not _is_number(timestamp) or timestamp < 0:
        raise TraceFormatError(path, line, f"timestamp must be a non-negative number of ms, got {timestamp!r}")
    for key in ("input_length", "output_length"):
        if not _is_int(raw[key]) or raw[key] < 0:
            raise TraceFormatError(path, line, f"{key} must be a non-negative integer of tokens, got {raw[key]!r}")
    if not isinstance(hash_ids, list) or not all(_is_int(h) for h in hash_ids):
        raise TraceFormatError(path, line, f"hash_ids must be a list of integers, got {str(hash_ids)[:80]}")
    if previous_ms is not None and timestamp < previous_ms:
        raise TraceFormatError(path, line, f"timestamp {timestamp} ms is earlier than the previous record's "
                               f"{previous_ms} ms; traces must be sorted by arrival time")
    expected = math.ceil(raw["input_length"] / block_size)
    if len(hash_ids) != expected:
        raise TraceFormatError(path, line, _block_mismatch(raw["input_length"], len(hash_ids), block_size))
    return TraceRecord(line, timestamp, raw["input_length"], raw["output_length"], tuple(hash_ids))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float)


def _block_mismatch(tokens: int, blocks: int, block_size: int) -> str:
    stated = (f"{blocks} hash_ids for input_length {tokens}, but block_size {block_size} needs "
              f"ceil({tokens}/{block_size}) = {math.ceil(tokens / block_size)}")
    if blocks == 0 or tokens == 0:
        return f"{stated}; a record needs one hash id per started block"
    implied = _implied_block_size(tokens, blocks)
    return (f"{stated}. Block size {block_size} was assumed but this record's blocks hold about {implied} tokens: "
            f"load it with block_size={implied} (Mooncake FAST'25 traces use {BLOCK_TOKENS}), or fix the record")


def _implied_block_size(tokens: int, blocks: int) -> int:
    """A block size that gives ``blocks`` blocks, a power of two when one fits (trace tools use those)."""
    smallest = math.ceil(tokens / blocks)
    largest = math.ceil(tokens / (blocks - 1)) - 1 if blocks > 1 else smallest * 2
    power = 1 << max(0, (smallest - 1).bit_length())
    return power if power <= largest else smallest


def theoretical_hit_ratio(records: Sequence[TraceRecord]) -> float:
    """Share of blocks an infinite cache would serve: those in a request's leading run of seen blocks.

    KV of a block depends on every token before it, so reuse ends at the first unseen block
    even if later ids were seen (prefix-hashed traces never have such ids).
    """
    seen: set[int] = set()
    hits = total = 0
    for record in records:
        hits += leading_hits(record.hash_ids, seen)
        total += len(record.hash_ids)
        seen.update(record.hash_ids)
    return hits / total if total else 0.0


def leading_hits(hash_ids: Sequence[int], cached: Container[int]) -> int:
    """How many of the leading blocks are in ``cached``."""
    count = 0
    for block in hash_ids:
        if block not in cached:
            break
        count += 1
    return count


def block_token_ids(hash_id: int, length: int = BLOCK_TOKENS, token_ids: Sequence[int] = DEFAULT_TOKEN_IDS) -> list[int]:
    """``length`` token ids drawn from ``token_ids`` (usually ``range(low, high)``), fixed by ``hash_id`` alone.

    SHAKE-256 is an extendable-output hash, so a shorter block is a prefix of the full one.
    The modulo bias is below n / 2**32, negligible for any vocabulary.
    """
    stream = hashlib.shake_256(f"mooncake-block:{hash_id}".encode()).digest(4 * length)
    size = len(token_ids)
    return [token_ids[word % size] for word in struct.unpack(f"<{length}I", stream)]


def prompt_ids(record: TraceRecord, token_ids: Sequence[int] = DEFAULT_TOKEN_IDS, block_size: int = BLOCK_TOKENS,
               scale: int = 1) -> list[int]:
    """Exactly ``input_length // scale`` token ids, block by block from the record's hash ids.

    ``scale`` shrinks every block by the same factor (e.g. 4: 128-token blocks) so a small
    server can replay a long-context trace; which requests share which blocks is unchanged.
    """
    if scale <= 0 or block_size % scale:
        raise ValueError(f"scale must divide block_size {block_size}, got {scale}")
    length, per_block = record.input_length // scale, block_size // scale
    ids: list[int] = []
    for hash_id in record.hash_ids:
        ids.extend(block_token_ids(hash_id, min(per_block, length - len(ids)), token_ids))
    return ids


def schedule(records: Sequence[TraceRecord], speed: float = 1.0, first_n: int | None = None,
             max_minutes: float | None = None) -> Iterator[tuple[float, TraceRecord]]:
    """(send offset in seconds, record): offsets from the first record, divided by ``speed``.

    ``max_minutes`` keeps the records within that many minutes of *trace* time from the
    first one (before the speed-up), so "the first 10 minutes" means the same at any speed.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    if not records:
        return
    start = records[0].timestamp_ms
    for index, record in enumerate(records):
        elapsed_s = (record.timestamp_ms - start) / 1000
        if (first_n is not None and index >= first_n) or (max_minutes is not None and elapsed_s > max_minutes * 60):
            return
        yield elapsed_s / speed, record


@dataclass(frozen=True)
class TraceRequest:
    """One request ready to send: when, what prompt, how many tokens to generate, which blocks."""

    offset_s: float
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    hash_ids: tuple[int, ...]


def trace_requests(records: Sequence[TraceRecord], token_ids: Sequence[int] = DEFAULT_TOKEN_IDS, *,
                   block_size: int = BLOCK_TOKENS, speed: float = 1.0, first_n: int | None = None,
                   max_minutes: float | None = None, max_tokens_cap: int | None = None) -> list[TraceRequest]:
    """The schedule with each record's prompt synthesized; ``max_tokens_cap`` bounds generation."""
    return [
        TraceRequest(offset, tuple(prompt_ids(record, token_ids, block_size)),
                     record.output_length if max_tokens_cap is None else min(record.output_length, max_tokens_cap),
                     record.hash_ids)
        for offset, record in schedule(records, speed, first_n, max_minutes)
    ]

"""Trace loading, validation, the infinite-cache hit ratio, prompt synthesis and the replay schedule."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_mooncake.qualify.traces import (
    BLOCK_TOKENS,
    TraceFormatError,
    TraceRecord,
    block_token_ids,
    leading_hits,
    load_trace,
    prompt_ids,
    schedule,
    theoretical_hit_ratio,
    trace_requests,
)

from .conftest import REPO

TRACE = REPO / "fixtures" / "traces" / "conversation_trace.jsonl"
BAD_BLOCKS = REPO / "tests" / "data" / "trace_bad_blocks.jsonl"


def _write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _rec(timestamp: int = 0, input_length: int = 1024, hash_ids: list[int] | None = None) -> dict[str, object]:
    ids = hash_ids if hash_ids is not None else list(range(math.ceil(input_length / 512)))
    return {"timestamp": timestamp, "input_length": input_length, "output_length": 8, "hash_ids": ids}


def test_conversation_trace_loads_whole() -> None:
    records = load_trace(TRACE)
    lines = TRACE.read_text().splitlines()
    assert len(records) == len(lines) and all(lines)
    assert [len(r.hash_ids) for r in records] == [len(json.loads(line)["hash_ids"]) for line in lines]
    assert records[0].line == 1 and records[-1].line == len(lines)


def test_theoretical_hit_ratio_equals_an_independent_count() -> None:
    records = load_trace(TRACE)
    # Independent count: a block occurrence is reused when its id first appeared in an earlier request.
    first_request: dict[int, int] = {}
    for index, record in enumerate(records):
        for block in record.hash_ids:
            first_request.setdefault(block, index)
    reused = sum(first_request[b] < i for i, r in enumerate(records) for b in r.hash_ids)
    independent = reused / sum(len(r.hash_ids) for r in records)
    assert theoretical_hit_ratio(records) == independent


def test_reuse_stops_at_the_first_unseen_block() -> None:
    records = [TraceRecord(1, 0, 1024, 1, (1, 2)), TraceRecord(2, 1, 1536, 1, (3, 2, 1))]
    assert theoretical_hit_ratio(records) == 0.0
    assert theoretical_hit_ratio([TraceRecord(1, 0, 512, 1, (1,))] * 3) == pytest.approx(2 / 3)
    assert theoretical_hit_ratio([]) == 0.0


def test_block_size_mismatch_names_file_line_values_and_cause() -> None:
    with pytest.raises(TraceFormatError) as caught:
        load_trace(BAD_BLOCKS)
    message = str(caught.value)
    assert message.startswith(f"{BAD_BLOCKS}:2: 64 hash_ids for input_length 1024")
    assert "blocks hold about 16 tokens" in message and "block_size=16" in message
    assert caught.value.line == 2


def test_assuming_16_token_blocks_on_a_mooncake_trace_points_at_512() -> None:
    with pytest.raises(TraceFormatError, match=r"conversation_trace.jsonl:1: .*Block size 16 was assumed but "
                                               r"this record's blocks hold about 512 tokens: load it with block_size=512"):
        load_trace(TRACE, block_size=16)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({"timestamp": 0}), "missing input_length, output_length, hash_ids"),
        (json.dumps(_rec() | {"input_length": "1024"}), "input_length must be a non-negative integer"),
        (json.dumps(_rec() | {"output_length": True}), "output_length must be a non-negative integer"),
        (json.dumps(_rec() | {"hash_ids": [1, "2"]}), "hash_ids must be a list of integers"),
        (json.dumps(_rec() | {"timestamp": -1}), "timestamp must be a non-negative number"),
        (json.dumps(_rec(timestamp=5)), "timestamp 5 ms is earlier than the previous record's 10 ms"),
        (json.dumps(_rec(timestamp=10, hash_ids=[])), "0 hash_ids for input_length 1024"),
    ],
)
def test_malformed_records_name_the_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = _write(tmp_path, _rec(timestamp=10), line)
    with pytest.raises(TraceFormatError, match=rf"trace.jsonl:2: .*{fragment}"):
        load_trace(path)


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, _rec(), "", _rec(timestamp=3))
    assert [r.line for r in load_trace(path)] == [1, 3]
    assert len(load_trace(TRACE, first_n=7)) == 7


def test_equal_hash_ids_give_identical_blocks_in_range() -> None:
    block = block_token_ids(42)
    assert block == block_token_ids(42) and len(block) == BLOCK_TOKENS
    assert block != block_token_ids(43)
    assert block_token_ids(42, 100) == block[:100]
    custom = block_token_ids(42, token_ids=range(5000, 5010))
    assert set(custom) <= set(range(5000, 5010)) and len(set(custom)) == 10
    # The documented derivation, recomputed: prompts must not change between releases.
    stream = hashlib.shake_256(b"mooncake-block:7").digest(16)
    words = [int.from_bytes(stream[i: i + 4], "little") for i in range(0, 16, 4)]
    assert block_token_ids(7, 4, range(100, 8000)) == [100 + w % 7900 for w in words]


def test_prompts_are_exact_and_shared_prefixes_are_identical() -> None:
    records = load_trace(TRACE, first_n=200)
    for record in records[:20]:
        assert len(prompt_ids(record)) == record.input_length
    first, later = next((a, b) for a in records for b in records if a is not b and a.hash_ids[:2] == b.hash_ids[:2])
    shared = next(i for i, (x, y) in enumerate(zip(first.hash_ids, later.hash_ids, strict=False)) if x != y)
    a, b = prompt_ids(first), prompt_ids(later)
    assert a[: shared * BLOCK_TOKENS] == b[: shared * BLOCK_TOKENS]
    assert a[shared * BLOCK_TOKENS: (shared + 1) * BLOCK_TOKENS] != b[shared * BLOCK_TOKENS: (shared + 1) * BLOCK_TOKENS]


@given(st.integers(min_value=1, max_value=5000), st.sampled_from([1, 2, 4, 8]))
def test_prompt_length_is_exact_for_any_length_and_scale(input_length: int, scale: int) -> None:
    record = TraceRecord(1, 0, input_length, 1, tuple(range(math.ceil(input_length / 512))))
    assert len(prompt_ids(record, scale=scale)) == input_length // scale


def test_scale_must_divide_the_block() -> None:
    with pytest.raises(ValueError, match="scale must divide block_size 512, got 3"):
        prompt_ids(TraceRecord(1, 0, 10, 1, (1,)), scale=3)


def test_schedule_offsets_speed_and_windows() -> None:
    records = load_trace(TRACE, first_n=300)
    span_s = (records[-1].timestamp_ms - records[0].timestamp_ms) / 1000
    offsets = [offset for offset, _ in schedule(records, speed=4)]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert offsets[-1] == pytest.approx(span_s / 4)
    assert len(list(schedule(records, first_n=10))) == 10
    window = list(schedule(records, speed=8, max_minutes=0.5))
    assert all(record.timestamp_ms - records[0].timestamp_ms <= 30000 for _, record in window)
    assert len(window) == sum(r.timestamp_ms - records[0].timestamp_ms <= 30000 for r in records)
    assert list(schedule([])) == []
    with pytest.raises(ValueError, match="speed must be positive"):
        list(schedule(records, speed=0))


def test_trace_requests_carry_offsets_prompts_and_capped_outputs() -> None:
    records = load_trace(TRACE, first_n=5)
    requests = trace_requests(records, range(10, 20), speed=2, max_tokens_cap=16)
    assert [r.offset_s for r in requests] == [offset for offset, _ in schedule(records, speed=2)]
    assert [len(r.prompt_token_ids) for r in requests] == [r.input_length for r in records]
    assert [r.max_tokens for r in requests] == [min(r.output_length, 16) for r in records]
    assert requests[0].hash_ids == records[0].hash_ids
    assert set(requests[0].prompt_token_ids) <= set(range(10, 20))


def test_prompt_ids_are_the_record_blocks_in_order_cut_to_length() -> None:
    record = TraceRecord(1, 0, 1100, 1, (7, 3, 9))
    expected = block_token_ids(7, 512) + block_token_ids(3, 512) + block_token_ids(9, 76)
    assert prompt_ids(record) == expected
    # Scaled: 128-token blocks, 275 tokens in all.
    assert prompt_ids(record, scale=4) == block_token_ids(7, 128) + block_token_ids(3, 128) + block_token_ids(9, 19)
    for scale in (0, -1, 3):
        with pytest.raises(ValueError, match=f"scale must divide block_size 512, got {scale}"):
            prompt_ids(record, scale=scale)


def test_leading_hits_stop_at_the_first_unseen_block() -> None:
    assert leading_hits([1, 2, 3, 1], {1, 2}) == 2 and leading_hits([], {1}) == 0 and leading_hits([5, 1], {1}) == 0

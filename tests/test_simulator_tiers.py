"""Per-tier predictions for one vLLM (tools/tiers.py) and the simulator CLI that reproduces them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mooncake.errors import USAGE_ERROR
from pytest_mooncake.qualify.capacity import MODELS
from pytest_mooncake.qualify.traces import TraceRecord, load_trace, theoretical_hit_ratio
from pytest_mooncake.tools.simulator import cli_main, simulate
from pytest_mooncake.tools.tiers import (
    TIER_TOLERANCE,
    TierCheck,
    check_tiers,
    pool_blocks_for,
    predict_tiers,
    prompt_hash_ids,
    prompt_records,
    write_trace,
)

B = 128
BLOCK_BYTES = MODELS["ci-tiny-llama"].kv_bytes(B)  # 512 KiB


def _tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 8000) for _ in range(n)]


def _blocks(*seeds: int, tail: int = 1) -> list[int]:
    """Whole 128-token blocks drawn from ``seeds`` plus ``tail`` more tokens (default 1: every
    whole block can hit)."""
    return [t for s in seeds for t in _tokens(s, B)] + _tokens(-1 - len(seeds), tail)


def test_hash_ids_are_chained_over_whole_blocks_and_stable() -> None:
    a = _blocks(1, 2, 3, tail=50)
    b = a[: 2 * B] + _blocks(9, tail=50)
    ids_a, ids_b = prompt_hash_ids(a), prompt_hash_ids(b)
    assert len(ids_a) == 4 and ids_a[:2] == ids_b[:2] and ids_a[2] != ids_b[2]
    # A block's id depends on what precedes it, not only on its own tokens.
    assert prompt_hash_ids(a[B:])[0] != ids_a[1]
    # One token changed in block 0 changes every id after it.
    changed = [a[0] + 1, *a[1:]]
    assert all(x != y for x, y in zip(prompt_hash_ids(changed), ids_a, strict=True))
    assert all(0 <= h < 2**63 for h in ids_a)
    # Pinned: a trace written today must predict the same tomorrow.
    assert prompt_hash_ids(list(range(B + 1))) == (8810244003185646156, 8343464909894798226)
    assert prompt_hash_ids([]) == ()
    with pytest.raises(ValueError, match="block_tokens must be positive"):
        prompt_hash_ids(a, 0)


def test_records_round_trip_through_a_mooncake_trace(tmp_path: Path) -> None:
    prompts = [_blocks(1, 2, tail=7), _blocks(1, tail=B), [5] * 3]
    records = prompt_records(prompts, output_lengths=[16, 3, 1], timestamps_ms=[0, 10.5, 10.5])
    assert [(r.line, r.input_length, r.output_length, len(r.hash_ids)) for r in records] == [
        (1, 263, 16, 3), (2, 256, 3, 2), (3, 3, 1, 1)]
    path = write_trace(records, tmp_path / "sub" / "sent.jsonl")
    assert load_trace(path, B) == records
    assert prompt_records([[1, 2]])[0].output_length == 1
    with pytest.raises(ValueError, match="2 prompts but 1 output lengths"):
        prompt_records([[1], [2]], output_lengths=[1])
    with pytest.raises(ValueError, match="must not decrease"):
        prompt_records([[1], [2]], timestamps_ms=[5, 4])


def _predict(prompts: list[list[int]], local: int | None, pool: int | None, outputs: list[int] | None = None):
    return predict_tiers(prompt_records(prompts, output_lengths=outputs), local_blocks=local, pool_blocks=pool)


def test_the_block_holding_the_last_prompt_token_never_hits() -> None:
    exact = _blocks(1, 2, tail=0)  # 256 tokens: the second block holds the last token
    assert [r.local_tokens for r in _predict([exact, exact], None, 0).requests] == [0, B]
    longer = _blocks(1, 2, tail=1)  # 257 tokens: both whole blocks can hit
    assert [r.local_tokens for r in _predict([longer, longer], None, 0).requests] == [0, 2 * B]
    assert _predict([[7], [7]], None, None).local_tokens == 0  # nothing before the last token
    assert _predict([[], []], None, None).prompt_tokens == 0


def test_local_first_then_the_pool_for_the_blocks_after() -> None:
    doc = _blocks(1, 2, 3, 4)
    # Local room for 2 blocks: the head survives (tail evicted first), the pool serves the rest.
    result = _predict([doc, doc], 2, None)
    assert [(r.local_tokens, r.pool_tokens) for r in result.requests] == [(0, 0), (2 * B, 2 * B)]
    assert result.local_ratio == pytest.approx(2 * B / (2 * len(doc)))
    assert result.pool_ratio == pytest.approx(2 * B / (2 * len(doc)))
    # Prefix caching off: everything from the pool; no pool: only what the local cache kept.
    assert _predict([doc, doc], 0, None).requests[1] == type(result.requests[1])(2, len(doc), 0, 4 * B)
    assert _predict([doc, doc], 2, 0).requests[1].pool_tokens == 0
    # Unbounded: every repeat from the local cache.
    assert _predict([doc, doc], None, None).requests[1].local_tokens == 4 * B


def test_the_pool_is_looked_up_from_the_prompt_start() -> None:
    # The pool holds 2 blocks, LRU: after doc's 4 it keeps its first 2; the local cache keeps all.
    doc = _blocks(1, 2, 3, 4)
    other = _blocks(5, 6)
    result = _predict([doc, other, doc], None, 2)
    assert result.requests[2].local_tokens == 4 * B and result.requests[2].pool_tokens == 0
    # With a local cache of 2 the third request finds doc's head locally, but the pool lost it
    # to `other`: the store's leading run is empty, so nothing is loaded beyond the local hit.
    result = _predict([doc, other, doc], 2, 2)
    assert result.requests[2].local_tokens == 0 and result.requests[2].pool_tokens == 0


def test_generated_tokens_and_partial_tails_take_local_slots() -> None:
    doc, other = _blocks(1, 2), _blocks(3)
    # doc takes 3 slots (2 whole blocks, then its last token's), other 2 (129 tokens) or 3 when it
    # generates 200 tokens. In 4 slots the first evicts doc's scratch slot (freed first), the
    # second also doc's last whole block.
    keeps = _predict([doc, other, doc], 4, 0, outputs=[1, 1, 1]).requests[2].local_tokens
    evicts = _predict([doc, other, doc], 4, 0, outputs=[1, 200, 1]).requests[2].local_tokens
    assert (keeps, evicts) == (2 * B, B)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=5), min_size=1, max_size=25),
       st.one_of(st.none(), st.integers(0, 12)))
def test_without_vllm_rules_it_counts_what_the_simulator_counts(docs: list[list[int]], capacity: int | None) -> None:
    # Prompts of whole blocks plus one token and one generated token: the last-token rule and
    # the scratch slots change nothing, so one node of the simulator hits the same blocks.
    records = prompt_records([_blocks(*doc) for doc in docs])
    unique_tails = [TraceRecord(r.line, r.timestamp_ms, r.input_length, 1, (*r.hash_ids[:-1], -r.line))
                    for r in records]
    predicted = predict_tiers(records, local_blocks=capacity, pool_blocks=0)
    assert predicted.local_tokens == B * simulate(unique_tails, "least_loaded", nodes=1, capacity_blocks=capacity,
                                                  block_size=B).local_hit_blocks
    if capacity is None:
        assert predicted.local_tokens == B * sum(len(r.hash_ids) for r in records) * theoretical_hit_ratio(unique_tails)


def test_capacities_are_checked() -> None:
    with pytest.raises(ValueError, match="local_blocks must be >= 0 or None"):
        predict_tiers([], local_blocks=-1, pool_blocks=0)
    with pytest.raises(ValueError, match="pool_blocks must be >= 0 or None"):
        predict_tiers([], local_blocks=1, pool_blocks=-2)
    with pytest.raises(ValueError, match="block_tokens must be positive"):
        predict_tiers([], local_blocks=1, pool_blocks=0, block_tokens=0)
    assert pool_blocks_for(2 * 2**30, MODELS["ci-tiny-llama"]) == 4096


def test_the_comparison_states_both_numbers_and_the_tolerance() -> None:
    doc = _blocks(1, 2, 3, 4)
    prediction = _predict([doc, doc], 2, None)  # 256 tokens local, 256 Mooncake of 1,026 prompt tokens
    local, pool = check_tiers(prediction, local_tokens=0.22 * 1026, pool_tokens=0.31 * 1026, tolerance=0.05)
    assert local.line() == "local tier: measured 22.0% of prompt tokens, predicted 25.0% (within 5 points)"
    assert local.within is True and local.difference == pytest.approx(0.22 - 256 / 1026)
    assert pool.line() == "Mooncake tier: measured 31.0% of prompt tokens, predicted 25.0% (off by 6.0 points, more than 5)"
    assert pool.within is False
    assert pool.to_dict() == {"tier": "mooncake", "measured": pytest.approx(0.31), "predicted": 256 / 1026,
                              "tolerance": 0.05, "within": False}
    # The default tolerance: 1 point.
    assert TIER_TOLERANCE == 0.01
    exact, near = check_tiers(prediction, local_tokens=256, pool_tokens=256 + 0.011 * 1026)
    assert exact.line() == "local tier: measured 25.0% of prompt tokens, predicted 25.0% (within 1 point)"
    assert near.line() == "Mooncake tier: measured 26.1% of prompt tokens, predicted 25.0% (off by 1.1 points, more than 1)"
    unmeasured = check_tiers(prediction, local_tokens=256, pool_tokens=None, prompt_tokens=1024)
    assert unmeasured[0].measured == 0.25 and unmeasured[1].within is None
    assert unmeasured[1].line() == "Mooncake tier: not measured (the server exports no counter for it), predicted 25.0% of prompt tokens"
    assert TierCheck("local", 0.30, 0.25, 0.05).within is True  # exactly at the tolerance
    assert [c.within for c in check_tiers(prediction, local_tokens=0, pool_tokens=0, tolerance=0.3)] == [True, True]
    with pytest.raises(ValueError, match="from 0 to 1"):
        check_tiers(prediction, local_tokens=0, pool_tokens=0, tolerance=5)


@pytest.fixture
def sent_trace(tmp_path: Path) -> tuple[Path, list[TraceRecord]]:
    docs = [_blocks(1, 2, 3, 4), _blocks(5, 6), _blocks(1, 2, 3, 4), _blocks(1, 2, 7), _blocks(5, 6, 8)]
    records = prompt_records(docs, output_lengths=[16] * len(docs))
    return write_trace(records, tmp_path / "sent.jsonl"), records


def test_cli_predicts_the_tiers_of_a_saved_sequence(tmp_path: Path, sent_trace: tuple[Path, list[TraceRecord]],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, records = sent_trace
    out = tmp_path / "tiers.json"
    code = cli_main([str(path), "--block-size", "128", "--tiers", "--capacity-blocks", "3", "--model", "ci-tiny-llama",
                     "--pool-bytes", "2GiB", "--json", str(out)])
    assert code == 0
    expected = predict_tiers(records, local_blocks=3, pool_blocks=4096)
    text = capsys.readouterr().out
    assert f"local tier: predicted {expected.local_ratio:.1%} of prompt tokens ({expected.local_tokens} of " in text
    assert f"Mooncake tier: predicted {expected.pool_ratio:.1%} of prompt tokens ({expected.pool_tokens} of " in text
    assert "local cache 3 blocks, Mooncake pool 4096 blocks" in text
    assert expected.local_tokens > 0 and expected.pool_tokens > 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected.to_dict()))
    assert cli_main([str(path), "--block-size", "128", "--tiers", "--nodes", "1"]) == 0
    assert "local cache unbounded, Mooncake pool 0 blocks" in capsys.readouterr().out


def test_pool_bytes_are_blocks_of_the_models_kv(sent_trace: tuple[Path, list[TraceRecord]], tmp_path: Path) -> None:
    path, _ = sent_trace
    by_bytes, by_blocks = tmp_path / "bytes.json", tmp_path / "blocks.json"
    common = [str(path), "--block-size", "128", "--nodes", "1", "--capacity-blocks", "2", "--strategies", "least_loaded",
              "--model", "ci-tiny-llama"]
    assert cli_main([*common, "--pool-bytes", f"{8 * BLOCK_BYTES + 5}", "--json", str(by_bytes)]) == 0
    assert cli_main([*common, "--pool-blocks", "8", "--json", str(by_blocks)]) == 0
    assert json.loads(by_bytes.read_text()) == json.loads(by_blocks.read_text())
    assert json.loads(by_bytes.read_text())[0]["pool_hit_blocks"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--pool-bytes", "lots"], "--pool-bytes lots: expected a byte size such as 67108864, 64MiB"),
    (["--pool-bytes", "1GiB", "--pool-blocks", "5"], "give the pool as --pool-blocks or as --pool-bytes, not both"),
    (["--pool-bytes", "100KiB", "--model", "ci-tiny-llama"],
     "--pool-bytes 100KiB holds no whole block: one 128-token block of ci-tiny-llama KV is 524288 bytes"),
    (["--tiers", "--nodes", "3"], "--tiers predicts one vLLM with an LRU local cache; --nodes does not apply"),
    (["--tiers", "--eviction", "lfu", "--chart", "x.png"], "--chart, --eviction lfu do not apply"),
])
def test_cli_refuses_what_it_cannot_use(sent_trace: tuple[Path, list[TraceRecord]], capsys: pytest.CaptureFixture[str],
                                        args: list[str], message: str) -> None:
    path, _ = sent_trace
    assert cli_main([str(path), "--block-size", "128", *args]) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("pytest-mooncake simulate: ") and message in err


def test_pool_bytes_zero_means_no_pool(sent_trace: tuple[Path, list[TraceRecord]], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = sent_trace
    assert cli_main([str(path), "--block-size", "128", "--tiers", "--capacity-blocks", "2", "--pool-bytes", "0"]) == 0
    assert "Mooncake tier: predicted 0.0%" in capsys.readouterr().out


def test_a_spawned_vllms_capacity_leaves_out_the_null_block_and_counts_the_pool_in_its_models_blocks() -> None:
    from pytest_mooncake.tools.tiers import spawned_capacity

    # The tiered topology: 96 blocks of its own, 2 store nodes of 1 GiB of 512 KiB blocks.
    assert spawned_capacity(96, 2 * 2**30) == (95, 4096)
    assert spawned_capacity(2048) == (2047, 0)

"""Capacity math (seed 003), trace handling and the cache-strategy simulator (seed 004)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mooncake.capacity import MODELS, ModelShape, break_even_bandwidth, need_ratio
from pytest_mooncake.simulator import STRATEGIES, compare, simulate
from pytest_mooncake.traces import TraceFormatError, load_trace, prompt_ids, schedule, theoretical_hit_ratio

from .conftest import REPO

TRACE = REPO / "fixtures" / "traces" / "conversation_trace.jsonl"
GiB = 2**30


def test_llama3_70b_kv_size_matches_the_design() -> None:
    shape = MODELS["llama3-70b"]
    assert shape.kv_bytes_per_token == 320 * 1024
    assert shape.kv_bytes(128 * 1024) == 40 * GiB


@pytest.mark.parametrize(("gpu", "expected_gbps"), [("A800", 6.0), ("H800", 19.0)])
def test_break_even_bandwidth_matches_the_design(gpu: str, expected_gbps: float) -> None:
    gbps = break_even_bandwidth(MODELS["llama3-70b"], 8192, gpu, gpus=8) / 1e9
    assert gbps == pytest.approx(expected_gbps, rel=0.1)


def test_prefill_flops_formula() -> None:
    shape = ModelShape("t", layers=2, hidden_size=10, attention_heads=2, kv_heads=1)
    assert shape.prefill_flops(3) == 2 * (4 * 9 * 10 + 22 * 3 * 100)


def test_hf_config_and_need_ratio() -> None:
    shape = ModelShape.from_hf_config({"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                                       "num_key_value_heads": 8, "torch_dtype": "bfloat16"})
    assert shape.kv_bytes_per_token == 128 * 1024
    need = break_even_bandwidth(shape, 16384, "H100")
    assert need_ratio(2 * need, shape, 16384, "H100") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown GPU 'TPU'"):
        break_even_bandwidth(shape, 1, "TPU")


def test_trace_block_mismatch_names_the_line() -> None:
    with pytest.raises(TraceFormatError, match=r"trace_bad_blocks.jsonl:2: 64 hash_ids for input_length 1024.*about 16 tokens, not 512"):
        load_trace(REPO / "tests" / "data" / "trace_bad_blocks.jsonl")


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1]}\n{oops\n')
    with pytest.raises(TraceFormatError, match=r"t.jsonl:2: not JSON"):
        load_trace(path)


def test_conversation_trace_hit_ratio_equals_an_independent_count() -> None:
    records = load_trace(TRACE)
    seen: set[int] = set()
    repeats = 0
    for record in records:
        repeats += sum(block in seen for block in record.hash_ids)
        seen.update(record.hash_ids)
    independent = repeats / sum(len(r.hash_ids) for r in records)
    assert theoretical_hit_ratio(records) == pytest.approx(independent)
    assert round(independent, 3) == 0.366
    assert simulate(records, "least_loaded", nodes=1).hit_ratio == pytest.approx(independent)


def test_prompts_are_exact_and_equal_blocks_are_identical() -> None:
    first, second = load_trace(TRACE, first_n=2)
    vocab = list(range(100, 8000))
    a, b = prompt_ids(first, vocab), prompt_ids(second, vocab)
    assert len(a) == first.input_length and len(b) == second.input_length
    shared = next(i for i, (x, y) in enumerate(zip(first.hash_ids, second.hash_ids, strict=False)) if x != y)
    assert a[: shared * 512] == b[: shared * 512]
    assert len(prompt_ids(first, vocab, scale=8)) == first.input_length // 8


def test_schedule_speeds_up_and_windows() -> None:
    records = load_trace(TRACE, first_n=50)
    offsets = [offset for offset, _ in schedule(records, speed=10)]
    assert offsets[0] == 0 and offsets[-1] == pytest.approx((records[-1].timestamp_ms - records[0].timestamp_ms) / 10000)
    assert len(list(schedule(records, max_minutes=0))) == sum(r.timestamp_ms == records[0].timestamp_ms for r in records)


def test_nodes_really_get_busy_and_cache_aware_concentrates() -> None:
    records = load_trace(TRACE, first_n=2000)
    results = {r.strategy: r for r in compare(records, STRATEGIES, nodes=4, capacity_blocks=5000)}
    assert results["least_loaded"].max_node_share < 0.35
    assert results["cache_aware"].hit_ratio >= results["random"].hit_ratio
    assert results["prefix_aware"].replicated_blocks > 0 and results["random"].replicated_blocks == 0
    bounded = simulate(records, "least_loaded", nodes=1, capacity_blocks=100)
    assert bounded.hit_ratio < simulate(records, "least_loaded", nodes=1).hit_ratio


def test_simulate_command_writes_table_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pytest_mooncake.cli import main

    code = main(["simulate", str(TRACE), "--first-n", "500", "--strategies", "random,cache_aware",
                 "--json", str(tmp_path / "sim.json"), "--chart", str(tmp_path / "sim.png")])
    assert code == 0
    assert "| cache_aware |" in capsys.readouterr().out
    assert [r["strategy"] for r in json.loads((tmp_path / "sim.json").read_text())] == ["random", "cache_aware"]
    assert (tmp_path / "sim.png").read_bytes().startswith(b"\x89PNG")
    assert main(["nonsense"]) == 2

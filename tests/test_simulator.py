"""The cache-strategy simulator: hit accounting, queues that really fill and drain, replication, the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_mooncake.qualify.capacity import GPUS, MODELS, recompute_seconds
from pytest_mooncake.qualify.traces import TraceRecord, load_trace, theoretical_hit_ratio
from pytest_mooncake.tools.simulator import (
    STRATEGIES,
    LfuCache,
    LruCache,
    SimConfig,
    cli_main,
    compare,
    simulate,
    table,
)

from .conftest import REPO

TRACE = REPO / "fixtures" / "traces" / "conversation_trace.jsonl"


@pytest.fixture(scope="module")
def whole_trace() -> list[TraceRecord]:
    return load_trace(TRACE)


@pytest.fixture(scope="module")
def head() -> list[TraceRecord]:
    return load_trace(TRACE, first_n=2000)


def _req(line: int, at_ms: float, *blocks: int) -> TraceRecord:
    return TraceRecord(line, at_ms, 512 * len(blocks), 1, blocks)


def _seconds(tokens: int) -> float:
    return recompute_seconds(MODELS["llama3-70b"], tokens, GPUS["A800"], 8)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_unbounded_node_hits_exactly_the_theoretical_ratio(whole_trace: list[TraceRecord], strategy: str) -> None:
    result = simulate(whole_trace, strategy, nodes=1)
    assert result.hit_ratio == theoretical_hit_ratio(whole_trace)
    assert result.pool_hit_blocks == 0 and result.blocks == sum(len(r.hash_ids) for r in whole_trace)


def test_an_unbounded_pool_recovers_every_hit_whatever_the_routing(head: list[TraceRecord]) -> None:
    theory = theoretical_hit_ratio(head)
    for result in compare(head, nodes=4, capacity_blocks=500, pool_blocks=None):
        assert result.hit_ratio == pytest.approx(theory), result.strategy
    random_routing = simulate(head, "random", nodes=4, capacity_blocks=500, pool_blocks=None)
    assert random_routing.pool_hit_blocks > 0 and random_routing.local_hit_blocks > 0


def test_bounded_caches_lose_hits_and_lfu_differs_from_lru(head: list[TraceRecord]) -> None:
    unbounded = simulate(head, "least_loaded", nodes=1).hit_ratio
    lru = simulate(head, "least_loaded", nodes=1, capacity_blocks=300)
    lfu = simulate(head, "least_loaded", nodes=1, capacity_blocks=300, eviction="lfu")
    assert lru.hit_ratio < unbounded and lfu.hit_ratio < unbounded
    assert lru.local_hit_blocks != lfu.local_hit_blocks
    assert simulate(head, "least_loaded", nodes=1, capacity_blocks=0).hit_ratio == 0.0


def test_a_busy_node_queues_and_drains() -> None:
    same_time = [_req(1, 0, 1, 2), _req(2, 0, 3, 4)]
    alone = simulate(same_time, "least_loaded", nodes=1)
    assert alone.mean_wait_s == pytest.approx(_seconds(1024) / 2)  # the second waited for the first
    assert simulate(same_time, "least_loaded", nodes=2).node_requests == (1, 1)
    later = [_req(1, 0, 1, 2), _req(2, 1000 * _seconds(1024) + 1, 3, 4)]
    assert simulate(later, "least_loaded", nodes=1).mean_wait_s == 0.0  # the first had finished


def test_service_time_is_the_prefill_of_uncached_tokens_only() -> None:
    repeat = [_req(1, 0, 1, 2, 3), _req(2, 60_000, 1, 2, 4)]
    result = simulate(repeat, "least_loaded", nodes=1)
    cached_part = _seconds(1536) - _seconds(1024)
    assert result.node_work_s[0] == pytest.approx(_seconds(1536) + cached_part)


def test_load_is_outstanding_work_so_least_loaded_avoids_the_long_job() -> None:
    long_job, short, probe = _req(1, 0, *range(100, 140)), _req(2, 0, 7), _req(3, 10, 8)
    result = simulate([long_job, short, probe], "least_loaded", nodes=2)
    assert result.node_requests == (1, 2)


def test_cache_aware_takes_the_longest_prefix_and_breaks_ties_by_load() -> None:
    records = [_req(1, 0, 1, 2, 3), _req(2, 0, 9), _req(3, 1, 1, 2, 5), _req(4, 2, 6)]
    result = simulate(records, "cache_aware", nodes=2)
    # 3 follows 1 to node 0 for its 2-block prefix; 4 matches nowhere and goes to the idler node 1.
    assert result.node_requests == (2, 2)
    assert result.local_hit_blocks == 2


def test_cache_aware_concentrates_and_replication_spreads(head: list[TraceRecord]) -> None:
    results = {r.strategy: r for r in compare(head, nodes=4, capacity_blocks=2000)}
    # Every conversation starts with the same block, so pure cache-awareness piles onto one node.
    assert results["cache_aware"].max_request_share > 0.9
    assert results["least_loaded"].work_cv < 0.1 and results["least_loaded"].max_request_share < 0.3
    assert results["prefix_aware"].max_request_share < 0.35 and results["prefix_aware"].replicated_blocks > 0
    assert results["prefix_aware"].hit_ratio > results["random"].hit_ratio
    assert results["prefix_aware"].p99_wait_s < results["cache_aware"].p99_wait_s
    assert all(results[s].replicated_blocks == 0 for s in ("random", "least_loaded", "cache_aware"))


@pytest.mark.parametrize(("window", "extra"), [(1, 3), (2, 3), (4, 2), (5, 2), (10, 1), (11, 0)])
def test_replica_count_follows_hotspot_intensity(window: int, extra: int) -> None:
    # Block 1 appears in the last request only: intensity = 1 / min(window, requests seen).
    before = [_req(i, i, 100 + i) for i in range(20)]
    copied = (simulate(before + [_req(99, 100, 1, 2)], "prefix_aware", nodes=4, hotspot_window=window).replicated_blocks
              - simulate(before, "prefix_aware", nodes=4, hotspot_window=window).replicated_blocks)
    assert copied == 2 * extra


def test_replication_needs_other_nodes_and_copies_only_the_hot_prefix() -> None:
    records = [_req(1, 0, 1, 2)]
    assert simulate(records, "prefix_aware", nodes=2, hotspot_window=1).replicated_blocks == 2
    assert simulate(records, "prefix_aware", nodes=1, hotspot_window=1).replicated_blocks == 0
    # Block 1 is in both requests (intensity 1: 3 copies), block 5 in one of two (0.5: also 3), then 6 cold.
    pair = [_req(1, 0, 1, 2), _req(2, 1, 1, 5), _req(3, 2, 8)]
    assert simulate(pair, "prefix_aware", nodes=4, hotspot_window=2).replicated_blocks == 3 * 2 + 3 * 1 + 3 * 1


def test_random_is_seeded(head: list[TraceRecord]) -> None:
    first, again = (simulate(head, "random", nodes=4, seed=7) for _ in range(2))
    assert first == again
    assert simulate(head, "random", nodes=4, seed=8).node_requests != first.node_requests


def test_cost_score_weighs_hit_points_against_redundancy() -> None:
    records = [_req(1, 0, 1, 2), _req(2, 1, 1, 2)]
    plain, replicated = (simulate(records, s, nodes=4, hotspot_window=1, cost_ratio=150) for s in ("cache_aware", "prefix_aware"))
    assert plain.hit_ratio == replicated.hit_ratio == 0.5
    assert plain.cost_score == pytest.approx(150 * 50)
    assert replicated.redundancy == replicated.replicated_blocks / 2
    assert replicated.cost_score == pytest.approx(150 * 50 - 100 * replicated.redundancy)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'fifo'; valid: random"):
        simulate([], "fifo")
    with pytest.raises(TypeError, match="unknown simulator option.*capacity;"):
        simulate([], "random", capacity=3)
    with pytest.raises(ValueError, match="nodes must be >= 1, got 0; eviction must be one of lru, lfu"):
        simulate([], "random", nodes=0, eviction="fifo")
    with pytest.raises(ValueError, match="unknown GPU 'TPU'"):
        simulate([], "random", gpu="TPU")
    assert simulate([], "random", config=SimConfig(nodes=2), model="qwen2.5-32b").requests == 0


@given(st.lists(st.integers(min_value=0, max_value=12), max_size=200), st.integers(min_value=0, max_value=6))
def test_lru_and_lfu_match_reference_implementations(touches: list[int], capacity: int) -> None:
    lru, lfu = LruCache(capacity), LfuCache(capacity)
    order: list[int] = []  # least recent first
    counts: Counter[int] = Counter()
    last_use: dict[int, int] = {}
    for clock, block in enumerate(touches):
        assert lru.touch(block) == (block not in order and capacity > 0)
        order = [b for b in order if b != block] + [block]
        del order[: max(0, len(order) - capacity)]
        assert all(b in lru for b in order) and len(lru) == len(order)

        if block in counts or capacity > 0:
            if block not in counts and len(counts) >= capacity:
                victim = min(counts, key=lambda b: (counts[b], last_use[b]))
                del counts[victim]
            counts[block] += 1
            last_use[block] = clock
        lfu.touch(block)
        assert all(b in lfu for b in counts) and len(lfu) == len(counts)


def test_table_lists_every_strategy_against_the_first(head: list[TraceRecord]) -> None:
    text = table(compare(head[:300], ("least_loaded", "cache_aware"), nodes=2))
    assert "| vs least_loaded |" in text and "| cache_aware |" in text
    assert table([]) == "(no results)"


def test_cli_prints_the_table_and_writes_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, chart = tmp_path / "sim.json", tmp_path / "sim.png"
    code = cli_main([str(TRACE), "--first-n", "400", "--strategies", "random,prefix_aware", "--nodes", "3",
                     "--capacity-blocks", "1000", "--pool-blocks", "inf", "--eviction", "lfu", "--json", str(out),
                     "--chart", str(chart)])
    assert code == 0
    assert "| prefix_aware |" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["strategy"] for r in rows] == ["random", "prefix_aware"]
    assert rows[0]["hit_ratio"] == pytest.approx(theoretical_hit_ratio(load_trace(TRACE, first_n=400)))
    assert len(rows[0]["node_requests"]) == 3
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_cli_rejects_bad_input_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main([str(TRACE), "--strategies", "random,fifo"])
    assert exited.value.code == 2 and "unknown strategy fifo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([str(TRACE), "--capacity-blocks", "-5"])
    assert cli_main([str(tmp_path / "missing.jsonl")]) == 4
    assert "cannot use the trace" in capsys.readouterr().err
    assert cli_main([str(REPO / "tests" / "data" / "trace_bad_blocks.jsonl")]) == 4
    assert "trace_bad_blocks.jsonl:2:" in capsys.readouterr().err

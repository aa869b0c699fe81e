"""The KV budget of attach runs on a Mooncake topology: what a test leaves in the pool must fit its room."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from pytest_mooncake.cluster.metrics import Snapshot
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.tokens import TokenPool
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS, TOPOLOGIES
from pytest_mooncake.qualify import protocol as protocol_module
from pytest_mooncake.qualify.capacity_search import ScenarioWorkload
from pytest_mooncake.qualify.kv_budget import BudgetedWorkload, KVBudget, count_plans, distinct_blocks, scenario_plans
from pytest_mooncake.qualify.protocol import ReuseProtocol
from pytest_mooncake.qualify.scenarios import Scenario

from .serving.fake_openai_server import FakeOpenAIServer

MiB = 2**20
BLOCK = 512 << 10  # ci-tiny-llama: 4 layers x 2 x 2 heads x 64 x 4 bytes x 128 tokens
POOL = TokenPool(tuple(range(1000, 9000)) * 4)
CONFIG = MooncakeConfig.from_defaults(request_timeout=30)


class FakeMetrics:
    """A master whose pool has ``capacity`` bytes with ``allocated`` in use (no master needed)."""

    def __init__(self, capacity: float, allocated: float) -> None:
        self.capacity, self.allocated = capacity, allocated

    def snapshot(self) -> Snapshot:
        return Snapshot({"master_total_capacity_bytes": self.capacity, "master_allocated_bytes": self.allocated})

    def settled(self, names: Sequence[str], *, timeout_s: float) -> None:
        self.settles = getattr(self, "settles", 0) + 1


def _budget(capacity_mib: float, allocated_mib: float = 0.0) -> tuple[KVBudget, list[str]]:
    lines: list[str] = []
    budget = KVBudget(FakeMetrics(capacity_mib * MiB, allocated_mib * MiB), BLOCK, "measured", lines.append)  # type: ignore[arg-type]
    return budget, lines


def test_blocks_are_counted_once_per_distinct_prefix_and_tails_never() -> None:
    document = list(range(3 * KV_BLOCK_TOKENS))
    assert distinct_blocks([document + [1] * 100]) == 3, "the 100-token tail is never stored"
    # The same document with two questions: 3 shared blocks, one new block each.
    questions = [document + [q] * KV_BLOCK_TOKENS for q in (1, 2)]
    assert distinct_blocks(questions) == 3 + 2
    # An equal block after a different prefix is another key.
    assert distinct_blocks([[5] * KV_BLOCK_TOKENS * 2, [6] * KV_BLOCK_TOKENS + [5] * KV_BLOCK_TOKENS]) == 4


def _prompts(scenario: Scenario) -> list[Sequence[int]]:
    """Each request one document of its own: ``document_tokens`` whole blocks."""
    return [[i] * scenario.document_tokens for i in range(scenario.requests)]


def test_a_scenario_that_fits_runs_as_defined_and_the_gate_says_so() -> None:
    budget, lines = _budget(100)
    scenario = Scenario("high_reuse", 4, 10 * KV_BLOCK_TOKENS, 0, reuse=1.0)
    assert budget.scenario(scenario, _prompts) == scenario
    assert lines == ["[kv budget] high_reuse: 20.0 MiB (40 blocks) of KV fits the 80.0 MiB the attached pool has "
                     "below 80% of its capacity"]
    assert budget.planned_bytes == 40 * BLOCK
    assert budget.metrics.settles == 1, "the room is read once the pool's allocated bytes settled"  # type: ignore[attr-defined]


def test_what_does_not_fit_loses_requests_and_says_what_was_cut() -> None:
    # 100 MiB at 80% with 55 in use: 25 MiB of room; 8 requests x 5 MiB do not fit, 5 do.
    budget, lines = _budget(100, 55)
    scenario = Scenario("high_reuse", 8, 10 * KV_BLOCK_TOKENS, 0, reuse=1.0)
    assert budget.scenario(scenario, _prompts).requests == 5
    assert lines == ["[kv budget] high_reuse: its KV, 40.0 MiB (80 blocks x 512 KiB, measured), does not fit the 25.0 MiB "
                     "the attached pool has below 80% of its capacity; SHRUNK: 8 -> 5 requests a round, 25.0 MiB (50 blocks)"]


def test_what_cannot_shrink_enough_is_skipped_with_the_figures() -> None:
    budget, _ = _budget(100, 78)
    scenario = Scenario("high_reuse", 3, 10 * KV_BLOCK_TOKENS, 0, reuse=1.0)
    with pytest.raises(pytest.skip.Exception) as skipped:
        budget.scenario(scenario, _prompts)
    assert str(skipped.value) == (
        "kv budget: high_reuse needs 15.0 MiB of KV (30 blocks x 512 KiB, measured), but the attached pool has 2.0 MiB "
        "left below 80% of its capacity (78.0 MiB of 100.0 MiB allocated); even 3 -> 2 requests a round needs 10.0 MiB. "
        "Writing it would make the master evict other tenants' KV; --mooncake-allow-eviction lifts this budget")


def test_only_open_ended_documents_are_shortened() -> None:
    budget, lines = _budget(100, 76)  # 4 MiB of room: 8 blocks
    long = Scenario("long_context", 3, 16 * KV_BLOCK_TOKENS, 0, reuse=1.0)
    fitted = budget.scenario(long, _prompts)
    assert (fitted.requests, fitted.document_tokens) == (2, 4 * KV_BLOCK_TOKENS)
    assert "documents shortened 2048 -> 512 tokens (this scenario's length is an upper bound)" in lines[0]
    fixed = [plan.value for plan in scenario_plans(dataclasses.replace(long, name="high_reuse"), _prompts)]
    assert {s.document_tokens for s in fixed} == {16 * KV_BLOCK_TOKENS}, "high_reuse's document is the scenario"


def test_the_run_s_earlier_kv_counts_against_later_tests() -> None:
    metrics = FakeMetrics(100 * MiB, 0)
    budget = KVBudget(metrics, BLOCK, "measured", lambda _: None)  # type: ignore[arg-type]
    scenario = Scenario("high_reuse", 4, 20 * KV_BLOCK_TOKENS, 0, reuse=1.0)  # 40 MiB
    assert budget.scenario(scenario, _prompts).requests == 4
    metrics.allocated += 40 * MiB  # what the first scenario stored stays in the pool
    assert budget.scenario(scenario, _prompts).requests == 4
    metrics.allocated += 40 * MiB
    with pytest.raises(pytest.skip.Exception):
        budget.scenario(scenario, _prompts)
    assert budget.summary() == ("[kv budget] the budgeted tests of this run planned 80.0 MiB of KV for the attached pool; "
                                "it now holds 80.0 MiB of 100.0 MiB, 0.0 MiB left below 80% of its capacity")


def test_trace_records_are_cut_from_the_end() -> None:
    budget, lines = _budget(100, 70)  # 10 MiB: 20 blocks
    records = list(range(40))
    kept = budget.fit("trace replay t.jsonl", count_plans(records, lambda part: [[r] * KV_BLOCK_TOKENS for r in part],
                                                           "trace requests")).value
    assert kept == list(range(20)) and "SHRUNK: 40 -> 20 trace requests" in lines[0]


@pytest.mark.parametrize("scenario", [
    Scenario("high_reuse", 3, 300, 140, reuse=1.0, max_tokens=2),
    Scenario("medium_reuse", 4, 300, 140, reuse=0.5, rounds=3, max_tokens=2),
    Scenario("low_reuse", 3, 0, 300, reuse=0.0, max_tokens=2),
    Scenario("multi_turn", 2, 200, 80, reuse=1.0, turns=3, max_tokens=2),
])
def test_the_planned_prompts_are_the_prompts_the_protocol_sends(monkeypatch: pytest.MonkeyPatch, scenario: Scenario) -> None:
    sent: list[Sequence[int]] = []
    real = protocol_module.run_requests

    def recording(config: Any, specs: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        sent.extend(spec.prompt for spec in specs)
        return real(config, specs, *args, **kwargs)

    monkeypatch.setattr(protocol_module, "run_requests", recording)
    seen: list[Scenario] = []
    with FakeOpenAIServer(ttft=0.005, itl=0.001, tokens=2) as server:
        endpoint = Endpoint(server.base_url, server.model, spawned=False, label="one")
        protocol = ReuseProtocol(endpoint, POOL, CONFIG, "plan", topology=TOPOLOGIES["mooncake-store"],
                            budget=lambda s, prompts_of: seen.append(s) or s)
        planned = protocol.planned_prompts(scenario)
        protocol.run(scenario)
    assert seen == [scenario], "the budget sees the scenario before anything is sent"
    # The exact repeat sends a cold prompt again: nothing new to store.
    assert set(map(tuple, planned)) == set(map(tuple, sent))
    assert distinct_blocks(planned) == distinct_blocks(sent)


def test_a_capacity_step_that_does_not_fit_skips_the_search_with_the_figures() -> None:
    metrics = FakeMetrics(100 * MiB, 0)
    lines: list[str] = []
    budget = KVBudget(metrics, BLOCK, "measured", lines.append)  # type: ignore[arg-type]
    mix = Scenario("capacity_mix", 4, 8 * KV_BLOCK_TOKENS, 64, reuse=1.0)
    workload = BudgetedWorkload(ScenarioWorkload(mix, POOL, "cap", lambda spec: spec), budget, "capacity mooncake-store")
    assert len(workload.prime()) == 4 and len(workload.requests("s1", 10)) == 10
    assert lines[0].startswith("[kv budget] capacity mooncake-store priming: 16.0 MiB (32 blocks) of KV fits")
    metrics.allocated = 79 * MiB
    with pytest.raises(pytest.skip.Exception, match=r"kv budget: capacity mooncake-store step s2 \(10 requests\) needs "
                                                    r"\d+\.\d MiB of KV .* has 1\.0 MiB left"):
        workload.requests("s2", 10)

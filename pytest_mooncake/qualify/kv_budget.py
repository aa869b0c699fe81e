"""The KV a serving test will leave in an attached Mooncake pool, budgeted against the room it has.

On a Mooncake topology the connector stores every whole KV block of every prompt in the pool,
and it stays there: only the store's own eviction ages it out, and that eviction is global
(every tenant's keys go). So in attach mode, before a scenario or a replay, we count the
distinct whole blocks its prompts hold (a block is keyed by its whole prefix, so a reused
document counts once), times the bytes one block takes in the pool, and compare that with the
room below the safe fill ratio the store suites keep (``Snapshot.write_headroom``). The room is
read from the master each time, so the KV this run stored earlier counts against later tests.
What does not fit is shrunk (fewer requests; shorter documents where the scenario's document
length is only an upper bound) or skipped with the figures. ``--mooncake-allow-eviction`` lifts
the budget.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import pytest

from pytest_mooncake.cluster.metrics import SAFE_FILL_RATIO, MasterMetrics, Snapshot
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS, Deployment
from pytest_mooncake.qualify.capacity import MODELS
from pytest_mooncake.qualify.capacity_search import Workload
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.serving import RequestSpec

__all__ = ["BudgetedWorkload", "KVBudget", "attached_budget", "count_plans"]

MiB = 2**20
# Fewer than two requests a round leaves no spread to judge: the scenario is skipped instead.
MIN_REQUESTS = 2
# Scenarios whose document length is "up to 32k tokens or the server's limit": shorter documents
# still measure what they are for. The others' lengths are the scenario (high_reuse's 3.5k shared
# document), so they only lose requests.
SHORTENABLE = ("long_context", "long_context_high_reuse")
# The measuring request's whole blocks: several, so a per-key overhead averages out.
PROBE_BLOCKS = 4
# How long a budget waits for the pool's allocated bytes to settle before reading the room left.
SETTLE_TIMEOUT_S = 10.0

T = TypeVar("T")


def distinct_blocks(prompts: Iterable[Sequence[int]], block_tokens: int = KV_BLOCK_TOKENS) -> int:
    """Whole blocks the connector stores for ``prompts``: one key per distinct prefix of whole
    blocks (the tail shorter than a block is never stored)."""
    seen: set[int] = set()
    for prompt in prompts:
        chain = 0
        for start in range(0, len(prompt) - block_tokens + 1, block_tokens):
            chain = hash((chain, tuple(prompt[start : start + block_tokens])))
            seen.add(chain)
    return len(seen)


@dataclass(frozen=True)
class Plan(Generic[T]):
    """One way to run a test: what it runs (``value``), what was cut to get there, and its prompts."""

    value: T
    change: str  # "" for the test as defined
    prompts: Callable[[], list[Sequence[int]]]


def scenario_plans(scenario: Scenario, prompts_of: Callable[[Scenario], list[Sequence[int]]]) -> Iterator[Plan[Scenario]]:
    """The scenario as defined, then with fewer requests a round, then (where allowed) with
    shorter documents at the fewest requests."""
    yield Plan(scenario, "", lambda: prompts_of(scenario))
    for n in range(scenario.requests - 1, MIN_REQUESTS - 1, -1):
        fewer = dataclasses.replace(scenario, requests=n)
        yield Plan(fewer, f"{scenario.requests} -> {n} requests a round", lambda s=fewer: prompts_of(s))  # type: ignore[misc]
    if scenario.name not in SHORTENABLE:
        return
    fewest = dataclasses.replace(scenario, requests=min(scenario.requests, MIN_REQUESTS))
    document = fewest.document_tokens // 2 // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
    while document >= 2 * KV_BLOCK_TOKENS:
        shorter = dataclasses.replace(fewest, document_tokens=document)
        yield Plan(shorter, f"{scenario.requests} -> {fewest.requests} requests a round and documents shortened "
                   f"{scenario.document_tokens} -> {document} tokens (this scenario's length is an upper bound)",
                   lambda s=shorter: prompts_of(s))  # type: ignore[misc]
        document = document // 2 // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS


def count_plans(value: Sequence[T], prompts_of: Callable[[Sequence[T]], list[Sequence[int]]], noun: str) -> Iterator[Plan[Sequence[T]]]:
    """All of ``value`` (trace records, say), then its first 7/8, 6/8 ... 1/8."""
    for n in sorted({len(value) * eighths // 8 for eighths in range(1, 9)} - {0}, reverse=True):
        change = "" if n == len(value) else f"{len(value)} -> {n} {noun}"
        yield Plan(value[:n], change, lambda part=value[:n]: prompts_of(part))  # type: ignore[misc]


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


class KVBudget:
    """Fits each test's KV into the attached pool's room below ``SAFE_FILL_RATIO`` of its capacity."""

    def __init__(self, metrics: MasterMetrics, block_bytes: float, source: str, announce: Callable[[str], None]) -> None:
        self.metrics = metrics
        self.block_bytes = block_bytes
        self.source = source  # how block_bytes was learnt, shown with every figure
        self.announce = announce
        self.planned_bytes = 0.0  # the KV the budgeted tests of this run were planned to store

    def _room(self, settle: bool) -> tuple[int, Snapshot]:
        if settle:  # the connector saves the last requests' KV in the background: count it too
            self.metrics.settled(("master_allocated_bytes",), timeout_s=SETTLE_TIMEOUT_S)
        snapshot = self.metrics.snapshot()
        return snapshot.write_headroom(), snapshot

    def fit(self, what: str, plans: Iterable[Plan[T]], *, settle: bool = True) -> Plan[T]:
        """The first plan whose KV fits the room left; pytest.skip with the figures when none does.
        ``settle`` first waits (briefly) for the pool's allocated bytes to stop changing."""
        room, snapshot = self._room(settle)
        full: tuple[int, float] | None = None
        last: Plan[T] | None = None
        for plan in plans:
            blocks = distinct_blocks(plan.prompts())
            need = blocks * self.block_bytes
            full = full or (blocks, need)
            last = plan
            if need <= room:
                self.planned_bytes += need
                what_fits = f"{_mib(need)} ({blocks} blocks)"
                if plan.change:
                    line = (f"[kv budget] {what}: its KV, {_mib(full[1])} ({full[0]} blocks x {self.block_bytes / 1024:.0f} KiB, "
                            f"{self.source}), does not fit the {_mib(room)} the attached pool has below "
                            f"{SAFE_FILL_RATIO:.0%} of its capacity; SHRUNK: {plan.change}, {what_fits}")
                else:
                    line = (f"[kv budget] {what}: {what_fits} of KV fits the {_mib(room)} the attached pool has below "
                            f"{SAFE_FILL_RATIO:.0%} of its capacity")
                self.announce(line)
                return plan
        assert full is not None and last is not None, "no plan to fit"
        capacity, allocated = snapshot["master_total_capacity_bytes"], snapshot["master_allocated_bytes"]
        smallest = f"; even {last.change} needs {_mib(distinct_blocks(last.prompts()) * self.block_bytes)}" if last.change else ""
        reason = (f"kv budget: {what} needs {_mib(full[1])} of KV ({full[0]} blocks x {self.block_bytes / 1024:.0f} KiB, "
                  f"{self.source}), but the attached pool has {_mib(room)} left below {SAFE_FILL_RATIO:.0%} of its "
                  f"capacity ({_mib(allocated)} of {_mib(capacity)} allocated){smallest}. Writing it would make the "
                  "master evict other tenants' KV; --mooncake-allow-eviction lifts this budget")
        pytest.skip(reason)

    def summary(self) -> str:
        """What the budgeted tests planned to leave in the pool, and the room that is left."""
        snapshot = self.metrics.snapshot()
        return (f"[kv budget] the budgeted tests of this run planned {_mib(self.planned_bytes)} of KV for the attached pool; "
                f"it now holds {_mib(snapshot['master_allocated_bytes'])} of {_mib(snapshot['master_total_capacity_bytes'])}, "
                f"{_mib(snapshot.write_headroom())} left below {SAFE_FILL_RATIO:.0%} of its capacity")

    def scenario(self, scenario: Scenario, prompts_of: Callable[[Scenario], list[Sequence[int]]]) -> Scenario:
        return self.fit(scenario.name, scenario_plans(scenario, prompts_of)).value


def measure_block_bytes(endpoint: Endpoint, metrics: MasterMetrics, run_id: str, timeout: float) -> float | None:
    """Pool bytes per stored key, from one cold request of whole blocks unique to this run
    (Δallocated over the keys stored, evicted ones included); None when no key was stored."""
    rng = random.Random(f"{run_id} kv budget")
    prompt = [rng.randrange(100, 1000) for _ in range(PROBE_BLOCKS * KV_BLOCK_TOKENS + 1)]
    before = metrics.settled(("master_key_count", "master_allocated_bytes")).values
    payload: dict[str, object] = {"model": endpoint.model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
    response = endpoint.post_json(endpoint.base_url + "/completions", payload, timeout)
    if response.status != 200:
        return None
    after = metrics.settled(("master_key_count", "master_allocated_bytes")).values
    keys = (after["master_key_count"] or 0) - (before["master_key_count"] or 0)
    grown = (after["master_allocated_bytes"] or 0) - (before["master_allocated_bytes"] or 0)
    return grown / keys if keys > 0 and grown > 0 else None


def attached_budget(deployment: Deployment, config: MooncakeConfig, run_id: str,
                    announce: Callable[[str], None]) -> KVBudget | None:
    """The budget of a Mooncake topology whose KV goes into an attached pool; None where there is
    nothing to budget (a spawned pool, no Mooncake in the path) or the user lifted it."""
    master = deployment.master
    if master is None or master.spawned or not deployment.topology.mooncake:
        return None
    if config.allow_eviction:
        announce("[kv budget] lifted by --mooncake-allow-eviction: this run's KV may fill the attached pool past its "
                 "eviction watermark, and Mooncake's eviction takes every tenant's keys")
        return None
    metrics = MasterMetrics(master)
    endpoint = deployment.endpoint
    measured = measure_block_bytes(endpoint, metrics, run_id, config.request_timeout)
    if measured is not None:
        return KVBudget(metrics, measured, "bytes per key measured on a cold request", announce)
    shape = MODELS.get(endpoint.model)
    if shape is not None:
        return KVBudget(metrics, shape.kv_bytes(KV_BLOCK_TOKENS), f"{endpoint.model}'s KV geometry", announce)
    pytest.skip(f"kv budget: a cold {PROBE_BLOCKS}-block request to {endpoint.base_url} stored no key on the master "
                f"{master.endpoint} and {endpoint.model!r} is not a known model shape, so the KV this test would leave "
                "in the attached pool cannot be sized; --mooncake-allow-eviction lifts the budget")


class BudgetedWorkload:
    """A capacity search's workload whose priming and every step must fit the attached pool's room:
    a step that does not fit skips the search with the figures (a step with fewer requests than its
    rate asks for would measure another rate)."""

    def __init__(self, workload: Workload, budget: KVBudget, what: str) -> None:
        self.workload, self.budget, self.what = workload, budget, what
        self.name = workload.name

    def _fitted(self, what: str, specs: list[RequestSpec]) -> list[RequestSpec]:
        prompts = [spec.prompt for spec in specs if spec.prompt is not None and not isinstance(spec.prompt, str)]
        # No settling between steps: the search's deadline is counted in seconds, and the 10% between the
        # safe fill ratio and the eviction watermark covers a step's saves still in flight.
        return self.budget.fit(f"{self.what} {what}", [Plan(specs, "", lambda: prompts)], settle=False).value

    def prime(self) -> list[RequestSpec]:
        return self._fitted("priming", self.workload.prime())

    def requests(self, tag: str, count: int) -> list[RequestSpec]:
        return self._fitted(f"step {tag} ({count} requests)", self.workload.requests(tag, count))

"""The cold-versus-hit protocol: warm up, make cold truly cold, let the cache settle, measure hits.

1. Warm the engine with unrelated prompts: a cold engine inside the measured window makes
   the *second* identical request faster even with no cache at all.
2. Reset the server's prefix cache when it offers ``/reset_prefix_cache``; every prompt also
   starts with a salt naming this run, so earlier runs cannot pre-warm it.
3. Cold round, then wait until the server's (and the Mooncake master's) counters stop
   growing: connectors save KV in the background, and a hit sent too early is partial.
4. Hit rounds reuse what the cold round stored. An exact repeat of one cold prompt checks
   that a cache hit returns the same answer as the cold request (temperature 0): the same
   token ids where the server returns them (a random-weight model's text may be empty).

A sequential verdict (``qualify.reuse.measure``) runs the protocol once per look: each look's
prompts carry the look in their salt, the warm-up happens on the first look only, and
``merge_looks`` joins the looks' rounds into one ``ScenarioRun`` to judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_mooncake.cluster.metrics import MasterMetrics
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.tokens import TokenPool
from pytest_mooncake.endpoints.topology import Deployment, Topology
from pytest_mooncake.qualify.breakdown import ttft_breakdown
from pytest_mooncake.qualify.progress import Progress
from pytest_mooncake.qualify.scenarios import PromptBuilder, Scenario, salt_tokens
from pytest_mooncake.results.allure_steps import step
from pytest_mooncake.results.schema import Round
from pytest_mooncake.runtime.probes import http_get_text, http_request
from pytest_mooncake.serving.sequential import Design, Looks
from pytest_mooncake.serving import (
    COUNTERS,
    PHASES,
    Concurrency,
    MetricsReader,
    RequestRecord,
    RequestSpec,
    round_stats,
    run_duration,
    run_requests,
    wait_until_quiescent,
)

__all__ = ["CounterReader", "ReuseProtocol", "Looks", "RoundResult", "ScenarioRun", "merge_looks", "store_counters", "verdict_design"]

CounterReader = Callable[[], dict[str, float | None]]
# Fits a scenario into the room its KV may take (qualify.kv_budget), given the prompts a scenario would send.
Budget = Callable[[Scenario, Callable[[Scenario], list[Sequence[int]]]], Scenario]
SETTLE_TIMEOUT_S = 30.0
SETTLE_STABLE_S = 1.0


@dataclass
class RoundResult:
    name: str  # a Round, or Round.hit(index) for the hit rounds after the first
    records: list[RequestRecord]
    wall_s: float
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, Any]:
        return round_stats(self.records, self.wall_s)

    def ttfts(self) -> list[float]:
        return [r.ttft_s for r in self.records if r.ok and r.ttft_s is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": str(self.name),
            "wall_s": self.wall_s,
            "stats": self.stats,
            "counters": self.counters,
            "breakdown": ttft_breakdown(self.records, self.counters),
            "records": [dataclasses.asdict(r) for r in self.records],
        }


@dataclass
class ScenarioRun:
    scenario: Scenario
    endpoint: Endpoint
    rounds: list[RoundResult]
    cache_reset: bool
    settled: bool
    integrity: tuple[RequestRecord, RequestRecord] | None  # (cold, cache hit) answers of the exact repeat
    topology: Topology | None = None  # None: an endpoint whose topology was not declared
    hit_endpoint: Endpoint | None = None  # cross-instance: the instance that served the hit rounds
    interleaved: bool = False  # cold and hit requests alternated in one round: one set of counters for both

    def round(self, name: str) -> RoundResult:
        return next(r for r in self.rounds if r.name == name)

    def errors(self) -> list[str]:
        return [str(rec.error) for r in self.rounds for rec in r.records if rec.error]


# The first look's share of a verdict's 5% error: a clear effect decides there at 99%.
FIRST_SHARE = 0.2


def verdict_design(config: MooncakeConfig) -> Design:
    """The sequential design of a verdict: at most ``verdict_looks`` looks within ``verdict_seconds``."""
    return Design(config.verdict_looks, config.verdict_seconds,
                  first_share=FIRST_SHARE if config.verdict_looks > 1 else 0.0)


def merge_looks(runs: Sequence[ScenarioRun]) -> ScenarioRun:
    """The looks of one scenario as one run: each round's records in look order, its wall time
    and counters summed; the integrity check is the first look's."""
    first = runs[0]
    rounds = []
    for result in first.rounds:
        same = [r for run in runs for r in run.rounds if r.name == result.name]
        counters: dict[str, float] = {}
        for r in same:
            for key, value in r.counters.items():
                counters[key] = counters.get(key, 0.0) + value
        rounds.append(RoundResult(result.name, [rec for r in same for rec in r.records], sum(r.wall_s for r in same), counters))
    return dataclasses.replace(first, rounds=rounds, cache_reset=all(r.cache_reset for r in runs),
                               settled=all(r.settled for r in runs))


def server_counters(endpoint: Endpoint) -> CounterReader:
    """The endpoint's prefix-cache (and LMCache) counters; none when it serves no /metrics."""

    reader = MetricsReader(endpoint.root_url + "/metrics", COUNTERS | PHASES,
                           fetch=lambda url: http_get_text(url, headers=endpoint.headers()))

    def read() -> dict[str, float | None]:
        try:
            return reader()
        except OSError:
            return {}

    return read


def store_counters(deployment: Deployment) -> CounterReader | None:
    """The Mooncake master's key count and bytes: proof that a connector stored KV there; its
    evicted keys, without which a stored-key count is no count."""
    if deployment.master is None:
        return None
    metrics = MasterMetrics(deployment.master)
    return lambda: metrics.read(("master_key_count", "master_allocated_bytes", "master_evicted_key_count"))


def reset_prefix_cache(endpoint: Endpoint) -> bool:
    try:
        response = http_request(endpoint.root_url + "/reset_prefix_cache", method="POST", timeout=30, headers=endpoint.headers())
    except OSError:
        return False
    return response.status == 200


class ReuseProtocol:
    """Runs one scenario against one endpoint."""

    def __init__(
        self,
        endpoint: Endpoint,
        pool: TokenPool,
        config: MooncakeConfig,
        run_id: str,
        *,
        hit_endpoint: Endpoint | None = None,
        topology: Topology | None = None,
        store_counters: CounterReader | None = None,
        warm_up: bool = True,
        progress: pytest.Config | None = None,
        budget: Budget | None = None,
        salt_label: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.hit_endpoint = hit_endpoint
        self.topology = topology
        self.pool = pool
        self.config = config
        self.run_id = run_id
        self.warm_up = warm_up
        self.progress = progress  # the pytest config whose terminal shows a progress line per round
        self._endpoints = [endpoint] + ([hit_endpoint] if hit_endpoint else [])
        self._server_counters = [server_counters(e) for e in self._endpoints]
        self._store_counters = store_counters
        self._look = 1  # the look being measured, for the progress line
        self.budget = budget
        # Prompts are salted with the endpoint's label, unless two endpoints must get the same prompts.
        self.salt_label = salt_label or endpoint.label
        # (round, request) in the order sent, for a simulator to replay them.
        self.sent: list[tuple[str, RequestSpec]] = []

    def _target(self, round_name: str) -> Endpoint:
        """Cross-instance: the cold round goes to the writer, every later round to the reader."""
        return self.endpoint if self.hit_endpoint is None or round_name == Round.COLD else self.hit_endpoint

    def _salt(self, scenario: Scenario, look: int = 1) -> Callable[[str], list[int]]:
        # Look 1 keeps the salt of a run judged once; later looks get prompts of their own.
        name = scenario.name if look == 1 else f"{scenario.name} look{look}"
        return lambda tag: salt_tokens(self.pool, f"{self.run_id} {self.salt_label} {name} {tag}")

    def _counters(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for read in self._server_counters:
            for key, value in read().items():
                values[key] = value if values.get(key) is None else (values[key] or 0.0) + (value or 0.0)
        if self._store_counters is not None:
            values.update(self._store_counters())
        return values

    def _settle(self) -> bool:
        """Wait until the counters stop growing: connectors save KV in the background."""
        return wait_until_quiescent(self._counters, interval_s=0.25, stable_for_s=SETTLE_STABLE_S,
                                    timeout_s=SETTLE_TIMEOUT_S).settled

    def _round(self, scenario: Scenario, name: str, specs: Sequence[RequestSpec], concurrency: int | None = None,
               endpoint: Endpoint | None = None) -> RoundResult:
        before = self._counters()
        target = endpoint or self._target(name)
        title = f"{scenario.name} {name}" + (f" (look {self._look})" if self._look > 1 else "")
        progress = Progress(self.progress, title, len(specs)) if self.progress and len(specs) > 1 else None
        limit = concurrency or scenario.concurrency or self.config.concurrency or len(specs) or 1
        self.sent += [(name, spec) for spec in specs]
        with step(f"round {name}: {len(specs)} requests to {target.label}"), progress or nullcontext():
            records = run_requests(target.client_config(self.config.request_timeout),
                                   [target.prepare(s, self.config.temperature) for s in specs],
                                   Concurrency(limit), on_record=progress.record if progress else None)
        after = self._counters()
        # Plain differences: the master's key count is a gauge and may fall when it evicts.
        change = {key: value - before[key] for key, value in after.items() if value is not None and before.get(key) is not None}
        return RoundResult(name, records, run_duration(records), change)

    def _warm_up(self, scenario: Scenario, endpoint: Endpoint, look: int) -> list[RequestSpec]:
        # Only the first look warms the engine up; later ones find it warm.
        if not self.warm_up or look != 1:
            return []
        salt = self._salt(scenario)
        return [RequestSpec(f"warmup-{endpoint.label}-{i}", scenario.name, "warmup", max_tokens=4,
                            prompt=tuple(self.pool.prompt(salt(f"warmup {endpoint.label} {i}"), 512, offset=5000 + i * 600)))
                for i in range(2)]

    def planned_prompts(self, scenario: Scenario, look: int = 1) -> list[Sequence[int]]:
        """Every prompt look ``look`` of ``scenario`` would send, to size the KV it leaves in a pool."""
        builder = PromptBuilder(self.pool, self._salt(scenario, look), scenario)
        specs = [spec for endpoint in self._endpoints for spec in self._warm_up(scenario, endpoint, look)]
        if scenario.turns:
            cold, conversations = builder.conversations()
            specs += cold + [turn for turns in conversations for turn in turns]
        else:
            specs += builder.cold_round()
            rounds = 2 if scenario.reuse == 0 and self.hit_endpoint is None else scenario.rounds or self.config.rounds
            for index in range(1, rounds):
                specs += builder.hit_round(Round.HIT if scenario.reuse == 0 and self.hit_endpoint is None else f"hit{index}",
                                           variant=index)
        return [spec.prompt or () for spec in specs if not isinstance(spec.prompt, str)]

    def _prepare(self, scenario: Scenario, look: int = 1) -> bool:
        for endpoint in self._endpoints:
            warm = self._warm_up(scenario, endpoint, look)
            if warm:
                self._round(scenario, Round.WARMUP, warm, concurrency=1, endpoint=endpoint)
        # Every endpoint is reset, also when one cannot be: all() must not stop at the first.
        return all([reset_prefix_cache(endpoint) for endpoint in self._endpoints])

    def run(self, scenario: Scenario, look: int = 1) -> ScenarioRun:
        """One look (by default the first) of ``scenario``: ``scenario.requests`` requests a round,
        fewer where the KV budget says the pool has no room for them."""
        self._look = look
        if self.budget is not None:
            scenario = self.budget(scenario, lambda fitted: self.planned_prompts(fitted, look))
        builder = PromptBuilder(self.pool, self._salt(scenario, look), scenario)
        reset = self._prepare(scenario, look)
        if scenario.turns:
            return self._conversations(scenario, builder, reset)
        if scenario.reuse == 0 and self.hit_endpoint is None:
            return self._interleaved(scenario, builder, reset)
        rounds = [self._round(scenario, Round.COLD, builder.cold_round())]
        settled = self._settle()
        for index in range(1, scenario.rounds or self.config.rounds):
            # The prompts' tag keeps its index for the first hit round too: it salts their fresh documents.
            rounds.append(self._round(scenario, Round.hit(index), builder.hit_round(f"hit{index}", variant=index)))
        integrity = None
        if scenario.reuse > 0:
            repeat = self._round(scenario, Round.REPEAT, [builder.cold_round()[0]], concurrency=1)
            integrity = (rounds[0].records[0], repeat.records[0])
            rounds.append(repeat)
        return self._done(scenario, rounds, reset, settled, integrity)

    def _interleaved(self, scenario: Scenario, builder: PromptBuilder, reset: bool) -> ScenarioRun:
        """No reuse to wait for: alternate the two rounds' requests, so a slow drift of the
        host (another process, a thermal change) loads both rounds alike."""
        cold, hit = builder.cold_round(), builder.hit_round(Round.HIT, variant=1)
        mixed = self._round(scenario, Round.MIXED, [p for pair in zip(cold, hit, strict=True) for p in pair], concurrency=1)
        by_round = {name: [r for r in mixed.records if r.round == name] for name in (Round.COLD, Round.HIT)}
        share = mixed.wall_s / max(1, len(mixed.records))
        rounds = [RoundResult(name, records, share * len(records), mixed.counters) for name, records in by_round.items()]
        return dataclasses.replace(self._done(scenario, rounds, reset, True, None), interleaved=True)

    def _conversations(self, scenario: Scenario, builder: PromptBuilder, reset: bool) -> ScenarioRun:
        cold_prompts, conversations = builder.conversations()
        cold = self._round(scenario, Round.COLD, cold_prompts, concurrency=1)
        records: list[RequestRecord] = []
        wall = 0.0
        settled = True
        counters: dict[str, float] = {}
        for turns in conversations:
            for turn in turns:
                result = self._round(scenario, Round.TURN, [turn], concurrency=1)
                wall += result.wall_s
                for key, value in result.counters.items():
                    counters[key] = counters.get(key, 0.0) + value
                # The first turn of a conversation has nothing to reuse yet.
                if not turn.request_id.endswith("-t0"):
                    records.extend(result.records)
                settled = self._settle() and settled
        # Counters cover every turn: the first turns store what the later ones reuse.
        hit = RoundResult(Round.HIT, records, wall, counters)
        return self._done(scenario, [cold, hit], reset, settled, None)

    def _done(self, scenario: Scenario, rounds: list[RoundResult], reset: bool, settled: bool,
              integrity: tuple[RequestRecord, RequestRecord] | None) -> ScenarioRun:
        return ScenarioRun(scenario, self.endpoint, rounds, reset, settled, integrity, self.topology, self.hit_endpoint)

"""The cold-versus-hit protocol: warm up, make cold truly cold, let the cache settle, measure hits.

1. Warm the engine with unrelated prompts: a cold engine inside the measured window makes
   the *second* identical request faster even with no cache at all.
2. Reset the server's prefix cache when it offers ``/reset_prefix_cache``; every prompt also
   starts with a salt naming this run, so earlier runs cannot pre-warm it.
3. Cold round, then wait until the server's (and the Mooncake master's) counters stop
   growing: connectors save KV in the background, and a hit sent too early is partial.
4. Hit rounds reuse what the cold round stored. An exact repeat of one cold prompt checks
   that a cache hit returns the same text as the cold request (temperature 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .measure import Concurrency, Record, run_round
from .metrics import parse_metrics
from .options import MooncakeConfig
from .probes import http_request
from .reporting import step
from .scenarios import Prompt, PromptBuilder, Scenario, salt_tokens
from .verdict import round_stats
from .vllm.server import Endpoint
from .vllm.tokens import TokenPool

COUNTERS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:external_prefix_cache_queries_total",
    "vllm:external_prefix_cache_hits_total",
)
SETTLE_TIMEOUT_S = 30.0
SETTLE_STABLE_S = 1.0


@dataclass
class RoundResult:
    name: str
    records: list[Record]
    wall_s: float
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, Any]:
        return round_stats(self.records, self.wall_s)

    def ttfts(self) -> list[float]:
        return [r.ttft_s for r in self.records if r.error is None and r.ttft_s is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.name,
            "wall_s": self.wall_s,
            "stats": self.stats,
            "counters": self.counters,
            "records": [r.as_dict() for r in self.records],
        }


@dataclass
class ScenarioRun:
    scenario: Scenario
    endpoint: Endpoint
    rounds: list[RoundResult]
    cache_reset: bool
    settled: bool
    integrity: tuple[str, str] | None  # (cold text, hit text) of the exact repeat

    def round(self, name: str) -> RoundResult:
        return next(r for r in self.rounds if r.name == name)

    def errors(self) -> list[str]:
        return [f"{rec.request_id}: {rec.error}" for r in self.rounds for rec in r.records if rec.error]


def server_counters(endpoint: Endpoint) -> dict[str, float]:
    try:
        response = http_request(endpoint.root_url + "/metrics", timeout=10, headers=endpoint.headers())
    except OSError:
        return {}
    if response.status != 200:
        return {}
    snapshot = parse_metrics(response.body)
    return {name: snapshot.get(name) for name in COUNTERS if name in snapshot.values}


def reset_prefix_cache(endpoint: Endpoint) -> bool:
    try:
        response = http_request(endpoint.root_url + "/reset_prefix_cache", method="POST", timeout=30, headers=endpoint.headers())
    except OSError:
        return False
    return response.status == 200


def wait_until_quiescent(read: Callable[[], dict[str, float]], timeout: float = SETTLE_TIMEOUT_S) -> bool:
    """Poll ``read`` until its values stay unchanged for SETTLE_STABLE_S; False on timeout."""
    deadline = time.monotonic() + timeout
    last = read()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = read()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= SETTLE_STABLE_S:
            return True
    return False


class Protocol:
    """Runs one scenario against one endpoint."""

    def __init__(
        self,
        endpoint: Endpoint,
        pool: TokenPool,
        config: MooncakeConfig,
        run_id: str,
        *,
        store_counters: Callable[[], dict[str, float]] | None = None,
        warm_up: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.pool = pool
        self.config = config
        self.run_id = run_id
        self.store_counters = store_counters
        self.warm_up = warm_up

    def _salt(self, scenario: Scenario) -> Callable[[str], list[int]]:
        return lambda tag: salt_tokens(self.pool, f"{self.run_id} {self.endpoint.label} {scenario.name} {tag}")

    def _counters(self) -> dict[str, float]:
        values = server_counters(self.endpoint)
        if self.store_counters is not None:
            values.update(self.store_counters())
        return values

    def _round(self, name: str, prompts: Sequence[Prompt], concurrency: int | None = None) -> RoundResult:
        before = self._counters()
        with step(f"round {name}: {len(prompts)} requests"):
            records, wall = run_round(
                self.endpoint,
                prompts,
                mode=Concurrency(self.config.concurrency if concurrency is None else concurrency),
                temperature=self.config.temperature,
                timeout=self.config.request_timeout,
            )
        after = self._counters()
        delta = {key: after[key] - before.get(key, 0.0) for key in after}
        return RoundResult(name, records, wall, delta)

    def _prepare(self, scenario: Scenario) -> bool:
        if self.warm_up:
            salt = self._salt(scenario)
            warm = [Prompt(f"warmup-{i}", "warmup", tuple(self.pool.prompt(salt(f"warmup {i}"), 512, offset=5000 + i * 600)), 4) for i in range(2)]
            self._round("warmup", warm, concurrency=1)
        return reset_prefix_cache(self.endpoint)

    def run(self, scenario: Scenario) -> ScenarioRun:
        builder = PromptBuilder(self.pool, self._salt(scenario), scenario)
        reset = self._prepare(scenario)
        if scenario.turns:
            return self._conversations(scenario, builder, reset)
        if scenario.reuse == 0:
            return self._interleaved(scenario, builder, reset)
        rounds = [self._round("cold", builder.cold_round())]
        settled = wait_until_quiescent(self._counters)
        for index in range(1, max(2, self.config.rounds)):
            rounds.append(self._round(f"hit{index}" if index > 1 else "hit", builder.hit_round(f"hit{index}", variant=index)))
        integrity = None
        if scenario.reuse > 0:
            repeat = self._round("repeat", [builder.cold_round()[0]], concurrency=1)
            integrity = (rounds[0].records[0].text, repeat.records[0].text)
            rounds.append(repeat)
        return ScenarioRun(scenario, self.endpoint, rounds, reset, settled, integrity)

    def _interleaved(self, scenario: Scenario, builder: PromptBuilder, reset: bool) -> ScenarioRun:
        """No reuse to wait for: alternate the two rounds' requests, so a slow drift of the
        host (another process, a thermal change) loads both rounds alike."""
        cold, hit = builder.cold_round(), builder.hit_round("hit", variant=1)
        mixed = self._round("mixed", [p for pair in zip(cold, hit, strict=True) for p in pair], concurrency=1)
        by_round = {name: [r for r in mixed.records if r.round == name] for name in ("cold", "hit")}
        share = mixed.wall_s / max(1, len(mixed.records))
        rounds = [RoundResult(name, records, share * len(records), mixed.counters) for name, records in by_round.items()]
        return ScenarioRun(scenario, self.endpoint, rounds, reset, True, None)

    def _conversations(self, scenario: Scenario, builder: PromptBuilder, reset: bool) -> ScenarioRun:
        cold_prompts, conversations = builder.conversations()
        cold = self._round("cold", cold_prompts, concurrency=1)
        records: list[Record] = []
        wall = 0.0
        settled = True
        for turns in conversations:
            for turn in turns:
                result = self._round("turn", [turn], concurrency=1)
                wall += result.wall_s
                # The first turn of a conversation has nothing to reuse yet.
                if not turn.request_id.endswith("-t0"):
                    records.extend(result.records)
                settled = wait_until_quiescent(self._counters) and settled
        hit = RoundResult("hit", records, wall)
        return ScenarioRun(scenario, self.endpoint, [cold, hit], reset, settled, None)

"""What the evaluation report says, computed from result documents and nothing else.

A *pair* is one baseline-versus-cache comparison of a serving scenario:
- an A/B record: its ``baseline`` round against its ``with-cache`` round (two endpoints);
- a cold-versus-hit record: its ``cold`` round against its ``hit`` round (one endpoint);
- with a separate baseline run (guide 002): the baseline run's ``hit`` round against the
  with-cache run's ``hit`` round, scenario by scenario.

Rounds send one request at a time, so their requests/s is a *latency speed-up*, never a
capacity: server counts come only from ``capacity`` records (the highest Poisson rate each
topology sustains at an SLO, ``pytest_mooncake.qualify.capacity_search``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mooncake.endpoints.model import DUMMY_MODEL
from pytest_mooncake.endpoints.topology import TOPOLOGIES
from pytest_mooncake.results.schema import HIT_ROUNDS, Outcome, Round, Verdict, uncredit_unserved
from pytest_mooncake.results.store import load


@dataclass(frozen=True)
class Run:
    """One results document and where it came from."""

    path: Path
    document: Mapping[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.document.get("run_id", self.path.stem))

    @property
    def topology(self) -> str | None:
        """The serving topology the run measured (``--mooncake-topology``), when it recorded one."""
        for described in (self.document.get("topology") or {}).values():
            if isinstance(described, Mapping) and described.get("topology"):
                return str(described["topology"])
        return None

    def records(self, kind: str) -> list[Mapping[str, Any]]:
        return [r for r in self.document.get("records", []) if r.get("kind") == kind]

    @property
    def tests(self) -> list[Mapping[str, Any]]:
        """Each test's outcome as the session recorded it (``Results.tests``); empty in older files."""
        return [t for t in self.document.get("tests") or [] if isinstance(t, Mapping)]


def load_run(path: Path) -> Run:
    try:
        document = load(path)
    except FileNotFoundError:
        raise ValueError(f"no results file at {path}") from None
    records = document.get("records")
    if not (isinstance(records, list) and records and all(isinstance(r, dict) for r in records)):
        found = "no 'records'" if records is None else f"'records' = {json.dumps(records)[:80]}"
        raise ValueError(f"{path} has {found}: expected a pytest-mooncake results document "
                         "(<results_dir>/<run_id>.json) whose 'records' is a non-empty list of measurement objects")
    return Run(path, document)


@dataclass(frozen=True)
class Judged:
    """A verdict and the scenario (or capacity) it judged."""

    scenario: str
    verdict: Verdict


def _verdicts(run: Run, name: str, data: Mapping[str, Any]) -> tuple[Verdict, ...]:
    try:
        verdicts = [Verdict.from_dict(v) for v in data.get("verdicts", [])]
    except ValueError as exc:
        raise ValueError(f"{run.path}: record {name!r}: {exc}") from None
    # A file written before gains were uncredited beside NOT SERVED BY MOONCAKE reads the same as a new one.
    return tuple(uncredit_unserved(verdicts))


@dataclass(frozen=True)
class Pair:
    """Baseline against cache for one scenario."""

    name: str
    scenario: str
    model: str
    endpoint: str
    baseline_label: str
    hit_label: str
    baseline: Mapping[str, Any]
    hit: Mapping[str, Any]
    rounds: tuple[tuple[str, Mapping[str, Any]], ...]
    verdicts: tuple[Verdict, ...]
    definition: Mapping[str, Any]
    source: str
    topology: str | None = None  # the serving topology the record was measured on, when recorded
    mooncake: Mapping[str, Any] | None = None  # what proves Mooncake served the hits (Mooncake topologies)
    prediction: Mapping[str, Any] | None = None  # the design's hit TTFT beside the measured one
    no_prediction: str | None = None  # why a Mooncake hit round has no prediction
    breakdowns: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # each round's TTFT split (qualify.breakdown)
    tiers: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # each round's hits per cache tier (qualify.tiers)

    @property
    def measured_breakdowns(self) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        return tuple((name, b) for name, b in self.breakdowns if "unavailable" not in b)

    @property
    def measured_tiers(self) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        return tuple((name, shares) for name, shares in self.tiers if "reason" not in shares)

    @property
    def measures_reuse(self) -> bool:
        """False for a scenario that reuses no prompt by design (cold_start, the negative control):
        its change is not the cache's doing, so it is no finding and no improvement."""
        reuse = self.definition.get("reuse")
        return not (isinstance(reuse, (int, float)) and reuse == 0)

    @property
    def is_ab(self) -> bool:
        """Two different servers (or runs) compared, rather than cold and hit on one server."""
        return self.baseline_label != Round.COLD


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read(stats: Mapping[str, Any], path: Sequence[str]) -> float | None:
    value: Any = stats
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return _number(value)


def _rounds(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(r.get("round")): r.get("stats") or {} for r in record.get("data", {}).get("rounds", [])}


def _pair(record: Mapping[str, Any], run: Run, base: tuple[str, Mapping[str, Any]],
          hit: tuple[str, Mapping[str, Any]]) -> Pair:
    data = record.get("data", {})
    name = str(record.get("name"))
    return Pair(
        name=name,
        scenario=str(data.get("scenario", name)),
        model=str(data.get("model", "?")),
        endpoint=str(data.get("endpoint", "?")),
        baseline_label=base[0],
        hit_label=hit[0],
        baseline=base[1],
        hit=hit[1],
        rounds=tuple(_rounds(record).items()),
        breakdowns=tuple((str(r.get("round")), r["breakdown"]) for r in data.get("rounds", []) if r.get("breakdown")),
        tiers=tuple((str(r.get("round")), r["tiers"]) for r in data.get("rounds", []) if r.get("tiers")),
        verdicts=_verdicts(run, name, data),
        definition=data.get("scenario_definition") or {},
        source=run.run_id,
        topology=data.get("topology") or run.topology,
        mooncake=data.get("mooncake"),
        prediction=data.get("prediction"),
        no_prediction=data.get("no_prediction"),
    )


def pairs_of(run: Run) -> list[Pair]:
    """The pairs of one run's serving records; records without both rounds are skipped."""
    found = []
    for record in run.records("serving"):
        rounds = _rounds(record)
        for base_label, hit_label in ((Round.BASELINE, Round.WITH_CACHE), (Round.COLD, Round.HIT)):
            if rounds.get(base_label) and rounds.get(hit_label):
                found.append(_pair(record, run, (base_label, rounds[base_label]), (hit_label, rounds[hit_label])))
                break
    return found


def pairs_against(with_cache: Run, baseline: Run) -> list[Pair]:
    """Guide 002: each scenario's hit round with the cache against the same round without it."""
    before = {str(r.get("name")): r for r in baseline.records("serving")}
    found = []
    for record in with_cache.records("serving"):
        other = before.get(str(record.get("name")))
        if other is None:
            continue
        now, then = _hit_round(record), _hit_round(other)
        if now and then:
            found.append(_pair(record, with_cache, (f"baseline ({baseline.run_id})", then),
                               (f"with cache ({with_cache.run_id})", now)))
    return found


def _hit_round(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rounds = _rounds(record)
    return next((rounds[name] for name in HIT_ROUNDS if rounds.get(name)), None)


@dataclass(frozen=True)
class Recommendation:
    """Derived from the verdicts alone: recommend only when every one passed."""

    outcome: str  # an Outcome, or "none" without verdicts
    passed: int
    total: int
    failed: tuple[Judged, ...]
    inconclusive: tuple[Judged, ...]


NOT_PASSED = ("failed", "error")


def unpassed_tests(runs: Sequence[Run]) -> list[Mapping[str, Any]]:
    """The failed and errored tests of the runs, in run order."""
    return [t for run in runs for t in run.tests if t.get("outcome") in NOT_PASSED]


def setup_scope(pairs: Sequence[Pair], runs: Sequence[Run], t: Mapping[str, str]) -> str | None:
    """What makes the measured setup a test setup rather than a production one, or None: the
    random-weight model we serve ourselves, or hardware without a GPU."""
    reasons = [t["setup_dummy"].format(model=DUMMY_MODEL)] if any(p.model == DUMMY_MODEL for p in pairs) else []
    if runs and not any((run.document.get("machine") or {}).get("gpus") for run in runs):
        reasons.append(t["setup_cpu"])
    return ", ".join(reasons) or None


def recommend(judged: Sequence[Judged]) -> Recommendation:
    failed = tuple(j for j in judged if j.verdict.outcome is Outcome.FAILED)
    unsure = tuple(j for j in judged if j.verdict.outcome is Outcome.INCONCLUSIVE)
    passed = len(judged) - len(failed) - len(unsure)
    outcome: str
    if not judged:
        outcome = "none"
    elif failed:
        outcome = Outcome.FAILED
    elif unsure:
        outcome = Outcome.INCONCLUSIVE
    else:
        outcome = Outcome.PASSED
    return Recommendation(outcome, passed, len(judged), failed, unsure)


# Topologies whose cache lives in Mooncake store servers, which cost money too.
STORE_TOPOLOGIES = frozenset({"mooncake-store", "tiered", "cross-instance", "pd-store", "lmcache"})


@dataclass(frozen=True)
class Capacity:
    """One topology's capacity at the SLO (a ``capacity`` record of a run)."""

    topology: str
    reference: str
    max_rate: float | None  # None: even the lowest rate tried missed the SLO
    ci_low: float
    ci_high: float | None  # None: no rate tried missed it
    outcome: str
    slo: str
    slo_ttft_ms: float | None
    slo_tpot_ms: float | None
    steps: tuple[Mapping[str, Any], ...]
    verdicts: tuple[Verdict, ...]
    summary: str
    source: str


def capacities_of(run: Run) -> list[Capacity]:
    found = []
    for record in run.records("capacity"):
        data = record.get("data", {})
        slo = data.get("slo") or {}
        topology = str(data.get("topology", record.get("name")))
        found.append(Capacity(
            topology=topology, reference=str(data.get("reference", "baseline")), max_rate=_number(data.get("max_rate")),
            ci_low=_number(data.get("ci_low")) or 0.0, ci_high=_number(data.get("ci_high")),
            outcome=str(data.get("outcome", "?")), slo=str(slo.get("text", "?")), slo_ttft_ms=_number(slo.get("ttft_p90_ms")),
            slo_tpot_ms=_number(slo.get("tpot_p90_ms")), steps=tuple(data.get("steps", [])),
            verdicts=_verdicts(run, f"capacity {topology}", data),
            summary=str(data.get("summary", "")), source=run.run_id,
        ))
    return found


def _servers(load: float, capacity: float | None) -> int | None:
    """Whole servers carrying ``load`` at ``capacity`` each; None when a server carries nothing."""
    if not capacity:
        return None
    # Rounded first, so a load of exactly 10 servers' worth is not 10.000000001 -> 11.
    return math.ceil(round(load / capacity, 6))


@dataclass(frozen=True)
class MeasuredPath:
    """What served the hits the report's verdicts judge: a recommendation may only claim that."""

    topologies: tuple[str, ...]
    mooncake_served: bool
    external_hit_tokens: float
    stored_keys: float  # of the scenarios measured without eviction
    polluted: int = 0  # scenarios whose stored keys were measured while the master evicted

    @property
    def kind(self) -> str:
        """``mooncake`` (it served hits), ``unserved`` (a Mooncake topology whose hits it did not
        serve), ``local`` (no Mooncake in the path) or ``unknown`` (not recorded)."""
        if self.mooncake_served:
            return "mooncake"
        if any(TOPOLOGIES[t].mooncake for t in self.topologies if t in TOPOLOGIES):
            return "unserved"
        return "local" if self.topologies else "unknown"


def measured_path(pairs: Sequence[Pair]) -> MeasuredPath:
    served = [p.mooncake for p in pairs if p.mooncake and p.mooncake.get("served")]
    return MeasuredPath(
        topologies=tuple(dict.fromkeys(p.topology for p in pairs if p.topology)),
        mooncake_served=bool(served),
        external_hit_tokens=sum(float(m.get("external_hit_tokens") or 0) for m in served),
        stored_keys=sum(float(m.get("stored_keys_cold") or 0) for m in served if not m.get("polluted")),
        polluted=sum(bool(m.get("polluted")) for m in served),
    )


@dataclass(frozen=True)
class CostModel:
    """Servers needed = offered load / capacity per server at the SLO, in whole servers.

    The saving is the baseline's servers minus the topology's; the store servers a Mooncake
    topology adds are weighed against it (ROI). With the capacity's interval the server count
    is a range: the load over the high end .. over the low end.
    """

    topology: str
    load: float  # requests/s to carry
    capacity: float  # requests/s one server sustains at the SLO with this topology
    ci_low: float
    ci_high: float | None
    baseline_capacity: float
    server_cost: float | None
    store_servers: float
    store_server_cost: float | None

    @property
    def ratio(self) -> float:
        return self.capacity / self.baseline_capacity

    @property
    def baseline_servers(self) -> int:
        return _servers(self.load, self.baseline_capacity) or 0

    @property
    def servers_needed(self) -> int:
        return _servers(self.load, self.capacity) or 0

    @property
    def servers_range(self) -> tuple[int | None, int | None]:
        """Servers at the capacity interval's high end (fewest) and low end (most; None: unbounded)."""
        return _servers(self.load, self.ci_high) if self.ci_high else None, _servers(self.load, self.ci_low)

    @property
    def servers_saved(self) -> int:
        return self.baseline_servers - self.servers_needed

    @property
    def monthly_savings(self) -> float | None:
        return None if self.server_cost is None else self.servers_saved * self.server_cost

    @property
    def store_cost(self) -> float | None:
        return None if self.store_server_cost is None else self.store_servers * self.store_server_cost

    @property
    def net(self) -> float | None:
        if self.monthly_savings is None or self.store_cost is None:
            return None
        return self.monthly_savings - self.store_cost


def cost_models(capacities: Sequence[Capacity], *, servers: float, load: float | None, server_cost: float | None,
                store_servers: float | None, store_server_cost: float | None) -> list[CostModel]:
    """One model per topology measured beside its reference (the reference included, saving
    nothing). ``load`` defaults to what ``servers`` baseline servers carry."""
    by_topology = {c.topology: c for c in capacities}
    models = []
    for capacity in capacities:
        reference = by_topology.get(capacity.reference)
        if reference is None or not reference.max_rate or not capacity.max_rate:
            continue
        stores = (store_servers or 0.0) if capacity.topology in STORE_TOPOLOGIES else 0.0
        models.append(CostModel(capacity.topology, load if load is not None else servers * reference.max_rate,
                                capacity.max_rate, capacity.ci_low, capacity.ci_high, reference.max_rate, server_cost,
                                stores, store_server_cost if store_server_cost is not None else server_cost))
    return models


def latency_speedup(pair: Pair) -> float | None:
    """Requests/s of the hit round over the baseline's, one request at a time: a latency speed-up."""
    before, after = read(pair.baseline, ("requests_per_s",)), read(pair.hit, ("requests_per_s",))
    if not before or after is None:
        return None
    return after / before - 1


def headline(pairs: Sequence[Pair], name: str | None) -> Pair | None:
    """The pair the summary leads with: the one named, else the first A/B pair, else the first."""
    if name is not None:
        for pair in pairs:
            if name in (pair.name, pair.scenario):
                return pair
        raise ValueError(f"--headline {name!r} matches no serving record; "
                         f"records: {', '.join(p.name for p in pairs) or 'none'}")
    return next((p for p in pairs if p.is_ab), pairs[0] if pairs else None)

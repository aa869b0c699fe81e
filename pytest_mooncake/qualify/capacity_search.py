"""Capacity at an SLO: the highest request rate a topology sustains while meeting its latency limits.

A capacity planner asks how many requests per second one server carries at the service level
users are promised, with and without the cache, on the same workload mix. Latency measured one
request at a time cannot answer that; this search offers open-loop Poisson load
(``PoissonRate``) at rising rates and watches TTFT p90 (and TPOT p90) against the SLO.

Per topology (one ``Endpoint``):

1. **Priming and calibration.** Every shared document of the workload is sent once (a serving
   cache is warm in production), then ``CALIBRATION_REQUESTS`` requests one at a time give the
   unloaded TTFT, TPOT and end-to-end latency. The first rate is ``START_LOAD`` times what one
   request at a time achieves (0.7 / mean E2E) unless the plan gives one.
2. **Ramp.** Each step offers Poisson arrivals at its rate, ``step_requests`` of them and at least
   ``min_step_s`` seconds' worth (a short burst never overloads anything); the rate grows by
   ``growth`` (``growth`` squared while the p90 is below a quarter of the limit) while the
   step's p90s meet the SLO. The first step that misses is past the knee
   and ends the ramp. When even the first step misses, the rate shrinks instead, down to
   ``min_rate``; if that misses too, the result says so (outcome ``below_lowest``).
3. **Bracketing.** The ramp goes on until the knee is bracketed: a step that *conclusively*
   meets the SLO (its p90's whole interval below the limit) and one above it that conclusively
   misses it. A step whose interval straddles the limit is repeated at the same rate, its
   arrivals pooled, up to ``step_looks`` looks (a sequential step: each look's interval is at
   ``serving.sequential.Design(step_looks).level()``, so the repeats keep it valid); if it still
   straddles, the ramp moves past it.
4. **Bisection** between the bracket's ends, at their geometric mean, until they are within
   ``resolution`` of each other or the midpoint is itself undecided (the knee is there).

Every step must fit in what is left of the deadline, or the search stops and says why; a
bracket left open then makes the capacity gain INCONCLUSIVE, and the verdict says which
topology's bracket is open.

Each step's p90 has a distribution-free interval over its requests (order statistics, ``p90``):
a conclusive pass needs at least 29 counted requests at 95%, 49 at a 4-look step's level. The
first ``warmup_share`` of a step's arrivals met an emptier queue than the rest and are not counted.
A failed request (an error, or unfinished when the step's drain time ran out) did not meet the
SLO: it counts as infinitely slow, and the p90 uses numpy's ``higher`` method, so it is always an
observed value and an infinity never enters an interpolation.

A step's outcome follows ``schema.Rule``: passed when the p90's whole interval meets the SLO,
failed when it wholly misses it, inconclusive between. The **capacity** is where the p90 curve,
linear between measured rates, first crosses the SLO (with TPOT limited too, the curve is the
larger of the two p90/limit ratios). Its **interval** runs from the highest rate up to which
every step passed to the lowest rate that failed: between measured rates the curve is unknown,
and near a knee it can be a cliff.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.tokens import TokenPool
from pytest_mooncake.qualify.scenarios import PromptBuilder, Scenario, salt_tokens
from pytest_mooncake.results.schema import STOP_BUDGET, STOP_DECIDED, WORDS, Outcome, Rule, Verdict, level_text
from pytest_mooncake.serving import (
    Concurrency,
    PoissonRate,
    RequestRecord,
    RequestSpec,
    arrival_offsets,
    run_requests,
)
from pytest_mooncake.serving.sequential import Design

__all__ = ["CapacityResult", "CapacitySLO", "ScenarioWorkload", "SearchPlan", "Step", "calibrate", "capacity_gain", "search"]

CALIBRATION_REQUESTS = 5
# The first rate, as a share of what one request at a time achieves (1 / mean E2E): a server
# that cannot batch is near its knee there, so its ramp brackets the knee in two or three steps.
START_LOAD = 0.7
# A step whose p90 is below this share of the limit is far from the knee.
FAR_BELOW = 0.25
FOUND, ABOVE_HIGHEST, BELOW_LOWEST = "found", "above_highest", "below_lowest"


class Workload(Protocol):
    """The request mix a search offers: the same mix for every topology compared."""

    name: str

    def prime(self) -> list[RequestSpec]:
        """Requests that fill the cache with what the mix shares (one per shared document)."""

    def requests(self, tag: str, count: int) -> list[RequestSpec]:
        """``count`` requests of the mix, unique to ``tag`` apart from what the mix shares."""


class ScenarioWorkload:
    """A reuse scenario as an open-loop mix: request ``i`` asks a new question about shared
    document ``i mod requests`` (the scenario's ``reuse`` share does; the rest are fresh prompts)."""

    def __init__(self, scenario: Scenario, pool: TokenPool, tag: str, prepare: Callable[[RequestSpec], RequestSpec]) -> None:
        if scenario.turns:
            raise ValueError(f"scenario {scenario.name!r} is a multi-turn conversation; a capacity search needs "
                             "independent requests: pick a scenario without turns")
        self.name = scenario.name
        self.scenario = scenario
        self.pool = pool
        self.tag = tag
        self.prepare = prepare
        self._builder = PromptBuilder(pool, self._salt, scenario)

    def _salt(self, text: str) -> list[int]:
        return salt_tokens(self.pool, f"{self.tag} {self.scenario.name} {text}")

    def _spec(self, request_id: str, ids: Sequence[int]) -> RequestSpec:
        return self.prepare(RequestSpec(request_id, self.scenario.name, "capacity", prompt=tuple(ids),
                                        max_tokens=self.scenario.max_tokens))

    def _question(self, tag: str, index: int) -> list[int]:
        # A salted start makes every question unique, so only the document can come from a cache.
        length = self.scenario.question_tokens
        return self.pool.prompt(self._salt(f"{tag} question {index}"), length, offset=(index * 131) % 50_000)

    def prime(self) -> list[RequestSpec]:
        if not self.scenario.document_tokens or not self.scenario.reuse:
            return []
        return [self._spec(f"{self.name}-prime-{d}", [*self._builder.document("shared", d), *self._question("prime", d)])
                for d in range(self.scenario.requests)]

    def requests(self, tag: str, count: int) -> list[RequestSpec]:
        reusing = round(self.scenario.reuse * 100)
        specs = []
        for index in range(count):
            # Coprime strides spread the reusing share evenly over the arrivals, not all first.
            shared = self.scenario.document_tokens and (index * 37) % 100 < reusing
            document = (self._builder.document("shared", index % self.scenario.requests) if shared
                        else self._builder.document(f"{tag} fresh", index) if self.scenario.document_tokens else [])
            specs.append(self._spec(f"{self.name}-{tag}-{index}", [*document, *self._question(tag, index)]))
        return specs


@dataclass(frozen=True)
class CapacitySLO:
    """p90 limits a rate must meet; ``None``: not limited."""

    ttft_p90_ms: float
    tpot_p90_ms: float | None = None

    def __str__(self) -> str:
        tpot = f", TPOT p90 <= {self.tpot_p90_ms:.0f} ms" if self.tpot_p90_ms is not None else ""
        return f"TTFT p90 <= {self.ttft_p90_ms:.0f} ms{tpot}"

    def met_by(self, record: RequestRecord) -> bool:
        if not record.ok or record.ttft_s is None or record.ttft_s * 1000 > self.ttft_p90_ms:
            return False
        return self.tpot_p90_ms is None or record.tpot_s is None or record.tpot_s * 1000 <= self.tpot_p90_ms


@dataclass(frozen=True)
class SearchPlan:
    """How a search spends its time; ``deadline_s`` bounds the whole search of one topology."""

    deadline_s: float
    step_requests: int = 30
    min_step_s: float = 10.0
    start_rate: float | None = None
    growth: float = 2.0
    resolution: float = 1.25
    warmup_share: float = 0.2
    min_rate: float = 0.05
    max_steps: int = 14
    step_looks: int = 4  # looks of a step whose p90 interval straddles the limit

    def __post_init__(self) -> None:
        if self.step_requests < 10:
            raise ValueError(f"SearchPlan(step_requests={self.step_requests}): a p90 needs at least 10 requests per step")
        if self.min_step_s < 0:
            raise ValueError(f"SearchPlan(min_step_s={self.min_step_s}): a step cannot last less than no time")
        if self.step_looks < 1:
            raise ValueError(f"SearchPlan(step_looks={self.step_looks}): a step takes at least one look")
        if self.growth <= 1 or self.resolution <= 1:
            raise ValueError(f"SearchPlan(growth={self.growth}, resolution={self.resolution}): both must be above 1")


@dataclass(frozen=True)
class P90:
    """A p90 in milliseconds with its interval (95%, or a step look's level); ``inf`` when failed requests decide it."""

    value: float
    ci_low: float
    ci_high: float
    n: int


def _binomial_cdfs(n: int, p: float) -> list[float]:
    """P(Bin(n, p) <= k) for k = 0 .. n. Each term is taken in logs: ``math.comb(n, i)`` passes a
    float's range near n = 1030, which a long step at a high rate reaches."""
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    total, cdfs = 0.0, []
    for i in range(n + 1):
        total += math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        cdfs.append(total)
    return cdfs


def p90(values_ms: Sequence[float], seed: int = 0, level: float = 0.95) -> P90:
    """The p90 of ``values_ms`` (``inf`` for failed requests) and its distribution-free interval at
    ``level``: order statistics chosen by the binomial law of how many values fall below the true
    p90 (Hahn & Meeker, *Statistical Intervals*, Wiley 1991, section 5.2). Valid for any TTFT
    distribution at any n; a percentile bootstrap of a p90 over a step's few dozen requests is
    not (it passed 9.5% of simulated steps whose true p90 was the limit). Few values leave the
    interval open above: ``inf`` until 0.9^n falls below the tail, 29 values at 95%."""
    del seed  # the interval is exact, nothing is drawn; kept for callers that seeded the bootstrap
    data = np.sort(np.asarray(values_ms, dtype=float))
    n = int(data.size)
    if n == 0:
        return P90(math.inf, math.inf, math.inf, 0)
    tail = (1 - level) / 2
    # The lower end is the l-th smallest value with P(Bin(n, 0.9) <= l - 1) <= tail, the upper the
    # u-th with P(Bin(n, 0.9) >= u) <= tail.
    below = _binomial_cdfs(n, 0.9)  # below[k - 1] = P(Bin(n, 0.9) <= k - 1)
    lower = max((k for k in range(1, n + 1) if below[k - 1] <= tail), default=0)
    upper = min((k for k in range(1, n + 1) if 1 - below[k - 1] <= tail), default=n + 1)
    return P90(float(np.percentile(data, 90, method="higher")), float(data[lower - 1]) if lower else 0.0,
               float(data[upper - 1]) if upper <= n else math.inf, n)


@dataclass(frozen=True)
class Step:
    """One offered rate and what it measured over its counted requests."""

    rate: float
    sent: int
    counted: int
    errors: int
    ttft_p90: P90
    tpot_p90: P90 | None
    goodput: float  # counted requests meeting the SLO, per second of their span
    achieved: float  # counted requests answered, per second of their span
    outcome: Outcome  # against the SLO
    wall_s: float
    looks: int = 1  # a straddling step is repeated at its rate, its arrivals pooled

    def ratios(self, slo: CapacitySLO) -> tuple[float, float, float]:
        """p90 / limit (the larger of TTFT's and TPOT's), for the value and both interval bounds."""
        pairs = [(self.ttft_p90, slo.ttft_p90_ms)]
        if slo.tpot_p90_ms is not None and self.tpot_p90 is not None:
            pairs.append((self.tpot_p90, slo.tpot_p90_ms))
        return (max(p.value / limit for p, limit in pairs), max(p.ci_low / limit for p, limit in pairs),
                max(p.ci_high / limit for p, limit in pairs))

    def meets(self, slo: CapacitySLO) -> bool:
        return self.ratios(slo)[0] <= 1.0


@dataclass(frozen=True)
class Calibration:
    """One request at a time on the primed topology: its unloaded latencies."""

    ttft_ms: float  # median
    tpot_ms: float | None  # median
    e2e_ms: float  # mean
    n: int


@dataclass(frozen=True)
class CapacityResult:
    topology: str
    endpoint: str
    model: str
    workload: str
    slo: CapacitySLO
    calibration: Calibration
    steps: tuple[Step, ...]
    max_rate: float | None  # None: even the lowest rate missed the SLO
    ci_low: float
    ci_high: float  # inf: no rate tried missed it
    outcome: str  # found / above_highest / below_lowest
    stopped: str  # why the search ended
    wall_s: float
    errors: tuple[str, ...] = field(default=())

    @property
    def bracketed(self) -> bool:
        """A conclusively passing step below a conclusively failing one: the capacity has both ends."""
        return self.ci_low > 0 and math.isfinite(self.ci_high)

    @property
    def bracket(self) -> str:
        """What the bracket lacks, for a message; empty when it is closed."""
        if self.bracketed:
            return ""
        missing = [what for what, lacking in (("no rate conclusively met the SLO", self.ci_low <= 0),
                                              ("no rate conclusively missed it", math.isinf(self.ci_high))) if lacking]
        return f"{self.topology}'s bracket is open: {' and '.join(missing)}"

    def summary(self) -> str:
        if self.outcome == BELOW_LOWEST:
            lowest = min(self.steps, key=lambda s: s.rate)
            return (f"{self.topology}: even the lowest rate tried, {lowest.rate:.3g} req/s, misses the SLO ({self.slo}): "
                    f"TTFT p90 {_ms(lowest.ttft_p90.value)} (95% CI {_ms(lowest.ttft_p90.ci_low)} .. "
                    f"{_ms(lowest.ttft_p90.ci_high)}, {lowest.errors} failed); capacity at this SLO < {self.ci_high:.3g} req/s "
                    f"({self.stopped})")
        at_least = "at least " if self.outcome == ABOVE_HIGHEST else ""
        high = "open" if math.isinf(self.ci_high) else f"{self.ci_high:.3g}"
        bracket = f"; OPEN BRACKET: {self.bracket}" if self.bracket else ""
        return (f"{self.topology}: {at_least}{self.max_rate:.3g} req/s at {self.slo} (bracket {self.ci_low:.3g} .. {high} "
                f"req/s; {len(self.steps)} steps, {self.wall_s:.0f} s; {self.stopped}{bracket})")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci_high"] = None if math.isinf(self.ci_high) else self.ci_high
        data["slo"] = {**asdict(self.slo), "text": str(self.slo)}
        data["steps"] = [_step_dict(s) for s in self.steps]
        data["summary"] = self.summary()
        data["bracketed"] = self.bracketed
        return data


def _ms(value: float) -> str:
    return "inf (failed requests)" if math.isinf(value) else f"{value:.0f} ms"


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _step_dict(step: Step) -> dict[str, Any]:
    data = {**asdict(step), "outcome": step.outcome.value}
    for key in ("ttft_p90", "tpot_p90"):
        if data[key] is not None:
            data[key] = {k: _finite(v) if isinstance(v, float) else v for k, v in data[key].items()}
    return data


def calibrate(endpoint: Endpoint, workload: Workload, request_timeout_s: float) -> Calibration:
    """Prime the cache, then measure ``CALIBRATION_REQUESTS`` requests one at a time."""
    client = endpoint.client_config(request_timeout_s)
    primed = run_requests(client, workload.prime(), Concurrency(1))
    records = run_requests(client, workload.requests("calibration", CALIBRATION_REQUESTS), Concurrency(1))
    failed = [str(r.error) for r in [*primed, *records] if r.error]
    if failed:
        raise RuntimeError(f"calibration of {endpoint.label} at {endpoint.base_url} failed: {len(failed)} requests, "
                           f"e.g. {failed[0]}; the capacity search needs a working endpoint")
    tpots = [r.tpot_s for r in records if r.tpot_s is not None]
    return Calibration(
        ttft_ms=float(np.median([r.ttft_s for r in records])) * 1000,  # type: ignore[arg-type]
        tpot_ms=float(np.median(tpots)) * 1000 if tpots else None,
        e2e_ms=float(np.mean([r.e2e_s for r in records])) * 1000,  # type: ignore[arg-type]
        n=len(records),
    )


OnStep = Callable[[Step, float], None]


def straddles(step: Step, plan: SearchPlan) -> bool:
    """Whether a step is looked at again: its interval straddles the limit and it has looks left."""
    return step.outcome is Outcome.INCONCLUSIVE and step.looks < plan.step_looks


class _Search:
    def __init__(self, endpoint: Endpoint, workload: Workload, slo: CapacitySLO, plan: SearchPlan,
                 calibration: Calibration, request_timeout_s: float, on_step: OnStep | None) -> None:
        self.endpoint, self.workload, self.slo, self.plan = endpoint, workload, slo, plan
        self.calibration = calibration
        self.client = endpoint.client_config(request_timeout_s)
        self.on_step = on_step
        self.started = time.monotonic()
        self.steps: list[Step] = []
        # A healthy step finishes its last request soon after its last arrival; an overloaded one
        # is cut here, and what it left unfinished counts as missing the SLO.
        self.drain_s = max(5.0, 4 * slo.ttft_p90_ms / 1000 + 2 * calibration.e2e_ms / 1000)

    def left_s(self) -> float:
        return self.plan.deadline_s - (time.monotonic() - self.started)

    def count(self, rate: float) -> int:
        """Arrivals of a step: enough for a p90, and enough time for an overloaded server's queue
        to build (30 arrivals at 500 req/s are one burst a fast server drains within the SLO)."""
        return max(self.plan.step_requests, math.ceil(rate * self.plan.min_step_s))

    def fits(self, rate: float) -> bool:
        span = arrival_offsets(rate, self.count(rate), len(self.steps))[-1]
        return span + self.drain_s <= self.left_s()

    def step(self, rate: float) -> Step:
        """A step at ``rate``; repeated, its arrivals pooled, while its p90 interval straddles the limit."""
        level = Design(self.plan.step_looks).level()
        batches: list[list[RequestRecord]] = []
        began = time.monotonic()
        while True:
            seed = len(self.steps) * self.plan.step_looks + len(batches)
            count = self.count(rate)
            specs = self.workload.requests(f"step{seed}-{rate:.4g}", count)
            span = arrival_offsets(rate, count, seed)[-1]
            batches.append(run_requests(self.client, specs, PoissonRate(rate, seed=seed), run_timeout_s=span + self.drain_s))
            step = _measure(rate, batches, self.slo, self.plan.warmup_share, time.monotonic() - began, seed, level)
            if not straddles(step, self.plan) or not self.fits(rate):
                break
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step, self.left_s())
        return step

    def bounds(self) -> tuple[float, float]:
        """The bracket so far: the highest rate up to which every step conclusively met the SLO
        (0: none) and the lowest that conclusively missed it (inf: none)."""
        if not self.steps:
            return 0.0, math.inf
        _, low, high, _ = knee(self.steps, self.slo)
        return low, high

    def _next(self) -> float | None:
        """The rate that closes the bracket: above every rate tried while nothing conclusively
        missed the SLO, below every rate tried while nothing conclusively met it."""
        low, high = self.bounds()
        rates = [s.rate for s in self.steps]
        if math.isinf(high):
            top = max(self.steps, key=lambda s: s.rate)
            return top.rate * self.plan.growth ** (2 if top.ratios(self.slo)[0] < FAR_BELOW else 1)
        if min(rates) / self.plan.growth < self.plan.min_rate:
            return None
        return min(rates) / self.plan.growth

    def run(self) -> str:
        """Ramp until the knee is bracketed, then bisect; returns why the search stopped."""
        rate: float | None = self.plan.start_rate or START_LOAD / (self.calibration.e2e_ms / 1000)
        while True:
            low, high = self.bounds()
            if self.steps and low > 0 and math.isfinite(high):
                return self.bisect()
            if rate is None:
                return f"the lowest rate, {min(s.rate for s in self.steps):.3g} req/s, misses the SLO"
            if len(self.steps) >= self.plan.max_steps:
                return f"{self.plan.max_steps} steps taken"
            if not self.fits(rate):
                return f"the deadline ({self.plan.deadline_s:.0f} s) leaves no time for a step at {rate:.3g} req/s"
            self.step(rate)
            rate = self._next()

    def bisect(self) -> str:
        while True:
            low, high = self.bounds()
            if high / low <= self.plan.resolution:
                return f"the knee is bracketed within x{self.plan.resolution:g} ({low:.3g} .. {high:.3g} req/s)"
            mid = math.sqrt(low * high)
            if any(s.rate == mid for s in self.steps):
                return f"the knee is bracketed ({low:.3g} .. {high:.3g} req/s); the step between them straddles the SLO"
            if len(self.steps) >= self.plan.max_steps:
                return f"{self.plan.max_steps} steps taken"
            if not self.fits(mid):
                return f"the deadline ({self.plan.deadline_s:.0f} s) leaves no time for a step at {mid:.3g} req/s"
            self.step(mid)


def _measure(rate: float, batches: Sequence[Sequence[RequestRecord]], slo: CapacitySLO, warmup_share: float,
             wall_s: float, seed: int, level: float = 0.95) -> Step:
    """A step's p90s over the looks at one rate: each look's first ``warmup_share`` of arrivals
    met an emptier queue and is not counted."""
    counted: list[RequestRecord] = []
    span = 0.0
    for records in batches:
        ordered = sorted(records, key=lambda r: r.scheduled_at_s)
        kept = ordered[math.ceil(len(ordered) * warmup_share):]
        counted.extend(kept)
        if kept:
            span += max(r.finished_at_s for r in kept) - min(r.scheduled_at_s for r in kept)
    ttfts = [r.ttft_s * 1000 if r.ok and r.ttft_s is not None else math.inf for r in counted]
    tpot = None
    if slo.tpot_p90_ms is not None:
        # A one-token answer has no TPOT and cannot miss a TPOT limit.
        tpot = p90([r.tpot_s * 1000 if r.ok else math.inf for r in counted if not r.ok or r.tpot_s is not None], seed, level)
    ttft = p90(ttfts, seed, level)
    step = Step(rate, sum(len(b) for b in batches), len(counted), sum(not r.ok for r in counted), ttft, tpot,
                goodput=sum(slo.met_by(r) for r in counted) / span if span > 0 else 0.0,
                achieved=sum(r.ok for r in counted) / span if span > 0 else 0.0,
                outcome=Outcome.INCONCLUSIVE, wall_s=wall_s, looks=len(batches))
    _, low, high = step.ratios(slo)
    return dataclasses.replace(step, outcome=Rule("<=", 1.0).outcome(low, high))


def _crossing(points: Sequence[tuple[float, float]]) -> float:
    """The rate where a ratio curve (rate, p90/limit), linear between points, first exceeds 1;
    the last rate when it never does. A failed step's infinite ratio leaves no slope: the
    crossing is then the rate before it."""
    for index, (rate, ratio) in enumerate(points):
        if ratio <= 1.0:
            continue
        if index == 0:
            return rate
        before_rate, before = points[index - 1]
        if math.isinf(ratio):
            return before_rate
        return before_rate + (1.0 - before) / (ratio - before) * (rate - before_rate)
    return points[-1][0]


def knee(steps: Sequence[Step], slo: CapacitySLO) -> tuple[float | None, float, float, str]:
    """Capacity (None when even the lowest rate misses), its interval, and the outcome.

    Between two measured rates the curve is unknown (a knee can be a cliff), so the interval
    ends on measured rates: from the highest rate up to which every step *passed* (0 when the
    lowest did not) to the lowest rate that *failed* (``inf`` when none did)."""
    ordered = sorted(steps, key=lambda s: s.rate)
    ratios = [(s.rate, *s.ratios(slo)) for s in ordered]
    first_unsure = next((i for i, (_, _, _, high) in enumerate(ratios) if high > 1.0), len(ratios))
    low = ratios[first_unsure - 1][0] if first_unsure else 0.0
    high = next((rate for rate, _, low_ratio, _ in ratios if low_ratio > 1.0), math.inf)
    if ratios[0][1] > 1.0:
        return None, 0.0, high, BELOW_LOWEST
    point = _crossing([(rate, value) for rate, value, _, _ in ratios])
    outcome = ABOVE_HIGHEST if all(value <= 1.0 for _, value, _, _ in ratios) else FOUND
    return point, min(low, point), max(high, point), outcome


def search(
    topology: str,
    endpoint: Endpoint,
    workload: Workload,
    slo: CapacitySLO,
    plan: SearchPlan,
    calibration: Calibration,
    *,
    request_timeout_s: float,
    on_step: OnStep | None = None,
) -> CapacityResult:
    """The capacity of ``endpoint`` at ``slo`` under ``workload`` (``calibrate`` it first)."""
    runner = _Search(endpoint, workload, slo, plan, calibration, request_timeout_s, on_step)
    stopped = runner.run()
    errors = tuple(dict.fromkeys(f"{s.errors} of {s.counted} failed at {s.rate:.3g} req/s" for s in runner.steps if s.errors))
    if not runner.steps:
        raise RuntimeError(f"capacity search of {topology}: no step fits: {stopped}. Raise the deadline "
                           "(--mooncake-capacity-deadline) or lower --mooncake-capacity-step-requests")
    max_rate, low, high, outcome = knee(runner.steps, slo)
    return CapacityResult(topology, endpoint.base_url, endpoint.model, workload.name, slo, calibration,
                          tuple(runner.steps), max_rate, low, high, outcome, stopped,
                          time.monotonic() - runner.started, errors)


def capacity_gain(with_cache: CapacityResult, baseline: CapacityResult, rule: Rule) -> Verdict:
    """The cache's capacity gain, ``cap(with) / cap(baseline) - 1``, judged on the interval that
    the two capacity brackets allow (low with-cache over high baseline .. high over low). An open
    bracket leaves that side of the interval unbounded (``-inf`` / ``inf``), and an undecided
    verdict then names the open bracket as the reason, not a bound it made up."""
    if baseline.max_rate:
        value = (with_cache.max_rate or 0.0) / baseline.max_rate - 1
    else:  # the baseline sustained no rate tried: any capacity with the cache is an unbounded gain
        value = math.inf if with_cache.max_rate else math.nan
    low = with_cache.ci_low / baseline.ci_high - 1 if with_cache.ci_low > 0 and math.isfinite(baseline.ci_high) else -math.inf
    high = with_cache.ci_high / baseline.ci_low - 1 if baseline.ci_low > 0 else math.inf
    outcome = rule.outcome(low, high)
    open_brackets = [r.bracket for r in (baseline, with_cache) if r.bracket]
    why = ""
    if outcome is Outcome.INCONCLUSIVE:
        why = (f"; INCONCLUSIVE because {'; '.join(open_brackets)} when the search stopped "
               "(a longer --mooncake-capacity-deadline closes it)" if open_brackets else
               "; the interval straddles the threshold: more requests per step or a longer search narrow it")
    looks = sum(s.looks for r in (baseline, with_cache) for s in r.steps)
    message = (f"capacity_gain = {_pct(value)} ({level_text(0.95)} CI {_pct(low)} .. {_pct(high)}; {with_cache.topology} "
               f"{_rate(with_cache)} vs {baseline.topology} {_rate(baseline)} at {with_cache.slo}; {looks} step looks) "
               f"{WORDS[outcome]} the threshold {rule}{why}")
    return Verdict("capacity_gain", None, value, low, high, len(baseline.steps), len(with_cache.steps), rule, outcome,
                   looks=looks, stop=STOP_BUDGET if open_brackets else STOP_DECIDED, wording=message)


def _pct(value: float) -> str:
    return f"{value:+}" if not math.isfinite(value) else f"{value:+.0%}"


def _rate(result: CapacityResult) -> str:
    if result.max_rate is None:
        return f"< {result.ci_high:.3g} req/s"
    return f"{'>= ' if result.outcome == ABOVE_HIGHEST else ''}{result.max_rate:.3g} req/s"


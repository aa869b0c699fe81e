"""The operating characteristic of a capacity step, measured by simulation (no server).

A simulated step offers ``plan.step_requests`` arrivals whose TTFTs are drawn like a loaded
server's (``serving.operating.Noise``) with a true p90 of ``true_ratio`` times the SLO, and goes
through what the search does with a real one: ``_measure`` (warm-up share dropped, p90 interval
at the step looks' level, ``Rule.outcome``) and ``straddles`` (repeat while undecided).
"""

from __future__ import annotations

import math

import numpy as np

from pytest_mooncake.qualify.capacity_search import CapacitySLO, SearchPlan, _measure, straddles
from pytest_mooncake.results.schema import Outcome
from pytest_mooncake.serving import RequestRecord
from pytest_mooncake.serving.operating import Characteristic, Noise
from pytest_mooncake.serving.sequential import Design

SLO_MS = 1000.0


def _records(ttfts_s: np.ndarray) -> list[RequestRecord]:
    return [RequestRecord(f"sim-{i}", "capacity", "step", "completions", 0.0, 0.0, i * 0.1, i * 0.1, i * 0.1 + t, float(t),
                          (), None, float(t), 100, 1, 0, 1, "", None) for i, t in enumerate(ttfts_s)]


def step_characteristic(true_ratio: float, plan: SearchPlan, noise: Noise, *, runs: int, seed: int = 0) -> Characteristic:
    """``runs`` simulated steps whose true TTFT p90 is ``true_ratio`` times the SLO."""
    rng = np.random.default_rng(seed)
    # The noise's own p90 (stalls included), so the drawn p90 is true_ratio x the SLO.
    p90_of_unit = float(np.percentile(noise.draw(rng, 1.0, (200_000,)), 90))
    median_s = true_ratio * SLO_MS / 1000 / p90_of_unit
    slo = CapacitySLO(SLO_MS)
    level = Design(plan.step_looks).level()
    counts = {outcome: 0 for outcome in Outcome}
    counted = looks = 0
    for run in range(runs):
        batches: list[list[RequestRecord]] = []
        while True:
            batches.append(_records(noise.draw(rng, median_s, (plan.step_requests,))))
            step = _measure(1.0, batches, slo, plan.warmup_share, 0.0, run, level)
            if not straddles(step, plan):
                break
        counts[step.outcome] += 1
        counted += step.counted
        looks += step.looks
    name = f"capacity step p90 <= SLO ({plan.step_requests} arrivals a look)"
    return Characteristic(name, true_ratio - 1.0 if math.isfinite(true_ratio) else math.inf, runs,
                          counts[Outcome.PASSED] / runs, counts[Outcome.FAILED] / runs,
                          counts[Outcome.INCONCLUSIVE] / runs, counted / runs, looks / runs)

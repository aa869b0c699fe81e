"""The operating characteristic of the sequential verdicts, measured by simulation, no server.

Each simulated run goes through the whole procedure the plugin uses (``sequential.Looks``
over looks, the Yuen interval of ``stats.judge`` on everything measured so far at the
look's level, ``Rule.outcome``) on TTFTs drawn
like the recorded ones: lognormal jitter (``sigma``) times an occasional stall (``stall_share``
of the requests take 2-4x as long), a cold and a hit batch per look. It reports how often the
procedure passes, fails or stays INCONCLUSIVE at a given true effect, and the mean n at stop.

- ``reuse``: the TTFT reduction of hits against cold requests, judged ``>= threshold``;
- ``control``: the negative control (no reuse), judged clean when the gain is ``<= limit``;
- ``capacity``: a capacity step, judged on its TTFT p90's interval against the SLO
  (``qualify.capacity_search`` repeats a straddling step the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pytest_mooncake.results.schema import Outcome, Rule
from pytest_mooncake.serving.sequential import Design, Looks
from pytest_mooncake.serving.stats import yuen_intervals


@dataclass(frozen=True)
class Noise:
    """TTFT noise like a busy host's: lognormal jitter and a share of 2-4x stalls."""

    sigma: float = 0.4
    stall_share: float = 0.03

    def draw(self, rng: np.random.Generator, median: float, n: tuple[int, ...]) -> np.ndarray:
        stall = np.where(rng.random(n) < self.stall_share, rng.uniform(2.0, 4.0, n), 1.0)
        return median * np.exp(rng.normal(0.0, self.sigma, n)) * stall


@dataclass(frozen=True)
class Characteristic:
    """What ``runs`` simulated runs of one verdict ended with at one true effect."""

    name: str
    true_effect: float
    runs: int
    passed: float  # shares of the runs
    failed: float
    inconclusive: float
    mean_n: float  # requests per side at stop
    mean_looks: float

    def row(self) -> str:
        return (f"| {self.name} | {self.true_effect:+.0%} | {self.runs} | {self.passed:.1%} | {self.failed:.1%} | "
                f"{self.inconclusive:.1%} | {self.mean_n:.1f} | {self.mean_looks:.2f} |")


HEADER = ("| verdict | true effect | runs | PASS | FAIL | INCONCLUSIVE | mean n at stop | mean looks |\n"
          "|---|---|---|---|---|---|---|---|")

# A look's batch of every run: draws rng -> (before, after), each (runs, look size).
Batch = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def simulate(name: str, true_effect: float, batch: Batch, rule: Rule, design: Design, *, runs: int, seed: int = 0,
             effect: str = "reduction") -> Characteristic:
    """``runs`` runs of the sequential verdict ``rule`` on batches drawn by ``batch``; the runs still
    looking are judged together (``stats.yuen_intervals``, as ``stats.judge`` does for one), each
    look at its own level (``Design.level``)."""
    rng = np.random.default_rng(seed)
    sequences = [Looks(design, clock=lambda: 0.0) for _ in range(runs)]
    looking = [iter(s) for s in sequences]
    for step in looking:
        next(step)
    before = np.empty((runs, 0))
    after = np.empty((runs, 0))
    active = np.arange(runs)
    outcomes: dict[int, Outcome] = {}
    n_at_stop = np.zeros(runs)
    while active.size:
        a, b = batch(rng, runs)
        before, after = np.hstack([before, a]), np.hstack([after, b])
        _, low, high = yuen_intervals(before[active], [after[active]], effect=effect, level=sequences[active[0]].level)
        still = []
        for run, lo, hi in zip(active, low, high, strict=True):
            outcome = rule.outcome(float(lo), float(hi))
            if sequences[run].conclude([outcome]):
                outcomes[run] = outcome
                n_at_stop[run] = before.shape[1]
            else:
                next(looking[run])
                still.append(run)
        active = np.asarray(still, dtype=int)
    counts = {outcome: sum(o is outcome for o in outcomes.values()) for outcome in Outcome}
    return Characteristic(name, true_effect, runs, counts[Outcome.PASSED] / runs, counts[Outcome.FAILED] / runs,
                          counts[Outcome.INCONCLUSIVE] / runs, float(n_at_stop.mean()),
                          sum(s.looks for s in sequences) / runs)


def reuse(true_reduction: float, threshold: float, look_size: int, design: Design, noise: Noise, *, runs: int,
          seed: int = 0) -> Characteristic:
    """A reuse scenario: cold and hit TTFT batches of ``look_size``, hits ``1 - true_reduction`` as slow."""
    def batch(rng: np.random.Generator, runs: int) -> tuple[np.ndarray, np.ndarray]:
        return noise.draw(rng, 1.0, (runs, look_size)), noise.draw(rng, 1.0 - true_reduction, (runs, look_size))

    return simulate(f"ttft_reduction >= {threshold:.0%}", true_reduction, batch, Rule(">=", threshold), design,
                    runs=runs, seed=seed)


def control(true_gain: float, limit: float, look_size: int, design: Design, noise: Noise, *, runs: int,
            seed: int = 0) -> Characteristic:
    """The negative control: unique prompts, clean when the gain's interval is wholly ``<= limit``."""
    def batch(rng: np.random.Generator, runs: int) -> tuple[np.ndarray, np.ndarray]:
        return noise.draw(rng, 1.0, (runs, look_size)), noise.draw(rng, 1.0 - true_gain, (runs, look_size))

    return simulate(f"control_gain <= {limit:.0%}", true_gain, batch, Rule("<=", limit), design, runs=runs, seed=seed)


def table(rows: list[Characteristic]) -> str:
    return "\n".join([HEADER, *(r.row() for r in rows)])


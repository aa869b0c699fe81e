"""The operating characteristic of the sequential verdicts, measured by simulation, no server.

Each simulated run goes through the whole procedure the plugin uses (``sequential.Sequence``
over looks, ``stats.judge`` on everything measured so far at the look's level) on TTFTs drawn
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
from pytest_mooncake.serving.sequential import Design, Sequence
from pytest_mooncake.serving.stats import judge


@dataclass(frozen=True)
class Noise:
    """TTFT noise like a busy host's: lognormal jitter and a share of 2-4x stalls."""

    sigma: float = 0.4
    stall_share: float = 0.03

    def draw(self, rng: np.random.Generator, median: float, n: int) -> np.ndarray:
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

# A look's batch on each side: draws (rng, look) -> (before, after).
Batch = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


def simulate(name: str, true_effect: float, batch: Batch, rule: Rule, design: Design, *, runs: int, seed: int = 0,
             effect: str = "reduction", resamples: int = 1000) -> Characteristic:
    """``runs`` runs of the sequential verdict ``rule`` on batches drawn by ``batch``."""
    rng = np.random.default_rng(seed)
    counts = {outcome: 0 for outcome in Outcome}
    total_n = total_looks = 0
    for run in range(runs):
        before: list[np.ndarray] = []
        after: list[np.ndarray] = []
        sequence = Sequence(design, clock=lambda: 0.0)
        for look in sequence:
            a, b = batch(rng)
            before.append(a)
            after.append(b)
            verdict = judge(name, np.concatenate(before), np.concatenate(after), rule, effect=effect,
                            level=sequence.level, resamples=resamples, seed=run * 1000 + look)
            sequence.conclude([verdict.outcome])
        counts[verdict.outcome] += 1
        total_n += verdict.n_before
        total_looks += sequence.looks
    return Characteristic(name, true_effect, runs, counts[Outcome.PASSED] / runs, counts[Outcome.FAILED] / runs,
                          counts[Outcome.INCONCLUSIVE] / runs, total_n / runs, total_looks / runs)


def reuse(true_reduction: float, threshold: float, look_size: int, design: Design, noise: Noise, *, runs: int,
          seed: int = 0) -> Characteristic:
    """A reuse scenario: cold and hit TTFT batches of ``look_size``, hits ``1 - true_reduction`` as slow."""
    def batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return noise.draw(rng, 1.0, look_size), noise.draw(rng, 1.0 - true_reduction, look_size)

    return simulate(f"ttft_reduction >= {threshold:.0%}", true_reduction, batch, Rule(">=", threshold), design,
                    runs=runs, seed=seed)


def control(true_gain: float, limit: float, look_size: int, design: Design, noise: Noise, *, runs: int,
            seed: int = 0) -> Characteristic:
    """The negative control: unique prompts, clean when the gain's interval is wholly ``<= limit``."""
    def batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return noise.draw(rng, 1.0, look_size), noise.draw(rng, 1.0 - true_gain, look_size)

    return simulate(f"control_gain <= {limit:.0%}", true_gain, batch, Rule("<=", limit), design, runs=runs, seed=seed)


def table(rows: list[Characteristic]) -> str:
    return "\n".join([HEADER, *(r.row() for r in rows)])


"""The operating characteristic of the sequential verdicts at the default budget, measured by simulation.

The whole procedure (looks, each look's level, the Yuen interval, Rule.outcome, the stop rule)
runs on simulated TTFTs: lognormal jitter plus 3% of 2-4x stalls. sigma 0.4 is the heaviest
jitter recorded in a round of our CI runs (benchmarks/results/operating_characteristic.md).
Fewer runs than the benchmark (benchmarks/operating_characteristic.py writes the table with
more), fixed seeds.
"""

from __future__ import annotations

import pytest

from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.qualify.capacity_search import SearchPlan
from pytest_mooncake.qualify.protocol import verdict_design
from pytest_mooncake.qualify.step_characteristic import step_characteristic
from pytest_mooncake.qualify.scenarios import default_scenarios
from pytest_mooncake.serving.operating import Noise, control, reuse, table

DESIGN = verdict_design(MooncakeConfig.from_defaults())
SCENARIOS = default_scenarios(4096)
RUNS = 100


def test_the_default_budget_is_24_looks_the_first_at_99_percent() -> None:
    assert (DESIGN.looks, DESIGN.level(1), DESIGN.level(2)) == (24, pytest.approx(0.99), pytest.approx(1 - 0.04 / 23))


def test_high_reuse_false_pass_at_the_threshold_and_decided_ten_points_above() -> None:
    look = SCENARIOS["high_reuse"].requests
    at = reuse(0.60, 0.60, look, DESIGN, Noise(0.4), runs=RUNS, seed=11)
    above = reuse(0.70, 0.60, look, DESIGN, Noise(0.4), runs=RUNS, seed=12)
    clear = reuse(0.90, 0.60, look, DESIGN, Noise(0.4), runs=RUNS, seed=13)
    below = reuse(0.50, 0.60, look, DESIGN, Noise(0.4), runs=RUNS, seed=14)
    print("\n" + table([at, above, clear, below]))
    assert at.passed <= 0.025
    # An honest server ten points above the threshold passes in every run, ten below in none.
    assert above.passed == 1 and above.mean_looks < DESIGN.looks / 2
    assert below.passed == 0
    # A clear effect stops at the first look (at this jitter, 1 run in 100 takes a second).
    assert clear.mean_looks <= 1.02 and clear.passed == 1


def test_the_negative_control_ends_clean_when_nothing_is_reused() -> None:
    look = SCENARIOS["low_reuse"].requests
    clean = control(0.0, 0.10, look, DESIGN, Noise(0.3), runs=RUNS // 2, seed=21)
    contaminated = control(0.30, 0.10, look, DESIGN, Noise(0.3), runs=RUNS // 2, seed=22)
    print("\n" + table([clean, contaminated]))
    assert clean.passed >= 0.99
    assert contaminated.passed == 0 and contaminated.failed >= 0.99


def test_a_capacity_step_passes_only_below_the_slo_and_decides_far_from_it() -> None:
    plan = SearchPlan(deadline_s=1.0)  # the default step: 30 arrivals a look, 4 looks at most
    rows = [step_characteristic(ratio, plan, Noise(0.4), runs=RUNS, seed=31 + i) for i, ratio in enumerate((0.3, 1.0, 1.5))]
    print("\n" + table(rows))
    far_below, at, above = rows
    assert at.passed <= 0.025 and above.passed == 0
    assert far_below.passed >= 0.99 and above.failed >= 0.99

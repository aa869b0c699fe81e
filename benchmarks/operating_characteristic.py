"""The operating characteristic of the sequential verdicts at the default budget, by simulation (no server).

Writes benchmarks/results/operating_characteristic.md (tests/test_operating_characteristic.py checks
the same procedure with fewer runs on every test run).

Run: .venv/bin/python benchmarks/operating_characteristic.py [--runs N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_mooncake.config.options import MooncakeConfig  # noqa: E402
from pytest_mooncake.qualify.capacity_search import SearchPlan  # noqa: E402
from pytest_mooncake.qualify.protocol import verdict_design  # noqa: E402
from pytest_mooncake.qualify.step_characteristic import step_characteristic  # noqa: E402
from pytest_mooncake.qualify.scenarios import default_scenarios  # noqa: E402
from pytest_mooncake.serving.operating import HEADER, Noise, control, reuse  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "operating_characteristic.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=600)
    args = parser.parse_args()
    design = verdict_design(MooncakeConfig.from_defaults())
    scenarios = default_scenarios(4096)
    high, control_look = scenarios["high_reuse"].requests, scenarios["low_reuse"].requests
    plan = SearchPlan(deadline_s=1.0)
    began = time.perf_counter()
    lines = [f"# Operating characteristic of the sequential verdicts\n",
             f"Default design: at most {design.looks} looks, the first interval at {design.level(1):.4f}, the others at "
             f"{design.level(2):.4f} (Bonferroni), {args.runs} simulated runs a row (controls and capacity: half); "
             "reuse and control verdicts judge the 20%-trimmed geometric mean with its Yuen-Welch t interval. "
             "TTFTs: lognormal jitter sigma plus 3% of 2-4x stalls. Written by benchmarks/operating_characteristic.py.\n"]
    sections = [
        (f"high_reuse (ttft_reduction >= 60%), looks of {high} cold + {high} hit requests",
         ((sigma, lambda s=sigma, e=effect: reuse(e, 0.60, high, design, Noise(s), runs=args.runs, seed=1))
          for sigma in (0.3, 0.4, 0.5) for effect in (0.50, 0.60, 0.70, 0.90))),
        (f"negative control (control_gain <= 10%), looks of {control_look} + {control_look} interleaved requests",
         ((sigma, lambda s=sigma, g=gain: control(g, 0.10, control_look, design, Noise(s), runs=args.runs // 2, seed=2))
          for sigma in (0.15, 0.3, 0.4) for gain in (0.0, 0.20))),
        (f"capacity step (TTFT p90 <= SLO; true effect = true p90 / SLO - 1), {plan.step_requests} arrivals a look "
         f"({plan.warmup_share:.0%} not counted), at most {plan.step_looks} looks, distribution-free p90 interval",
         ((sigma, lambda s=sigma, r=ratio: step_characteristic(r, plan, Noise(s), runs=args.runs // 2, seed=3))
          for sigma in (0.4,) for ratio in (0.3, 0.5, 1.0, 1.5, 2.0))),
    ]
    for title, rows in sections:
        lines.append(f"## {title}\n")
        lines.append("| sigma " + HEADER.splitlines()[0] + "\n|---" + HEADER.splitlines()[1])
        for sigma, row in rows:
            lines.append(f"| {sigma} " + row().row())
            print(lines[-1], flush=True)
        lines.append("")
    lines.append(f"({time.perf_counter() - began:.0f} s on one core)\n")
    OUT.write_text("\n".join(lines), "utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

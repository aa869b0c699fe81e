"""Time the simulator on the whole conversation trace, four strategies, one core (a benchmark, not a test).

Run: .venv/bin/python benchmarks/bench_simulator.py [--capacity-blocks N] [--pool-blocks N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_mooncake.qualify.traces import load_trace  # noqa: E402
from pytest_mooncake.tools.simulator import STRATEGIES, SimConfig, simulate, table  # noqa: E402

BUDGET_S = 10.0  # the target for all four strategies on the whole trace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--capacity-blocks", type=int, default=10_000)
    parser.add_argument("--pool-blocks", type=int, default=50_000)
    args = parser.parse_args()
    began = time.perf_counter()
    records = load_trace(REPO / "fixtures" / "traces" / "conversation_trace.jsonl")
    blocks = sum(len(r.hash_ids) for r in records)
    print(f"load + validate {len(records)} requests, {blocks} blocks: {time.perf_counter() - began:.2f} s")
    config = SimConfig(nodes=args.nodes, capacity_blocks=args.capacity_blocks, pool_blocks=args.pool_blocks)
    results, started = [], time.perf_counter()
    for strategy in STRATEGIES:
        began = time.perf_counter()
        results.append(simulate(records, strategy, config))
        print(f"{strategy:>13}: {time.perf_counter() - began:.2f} s")
    total = time.perf_counter() - started
    print(f"{len(STRATEGIES)} strategies, {args.nodes} nodes, capacity {args.capacity_blocks} blocks/node, "
          f"pool {args.pool_blocks} blocks: {total:.2f} s on one core (budget {BUDGET_S:.0f} s)\n")
    print(table(results))
    return 0 if total < BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())

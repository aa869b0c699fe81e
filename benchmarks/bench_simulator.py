"""Times the simulator on the whole conversation trace for the four strategies (a benchmark, not a test)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_mooncake.simulator import STRATEGIES, simulate, table  # noqa: E402
from pytest_mooncake.traces import load_trace  # noqa: E402

records = load_trace(REPO / "fixtures" / "traces" / "conversation_trace.jsonl")
results, started = [], time.perf_counter()
for strategy in STRATEGIES:
    began = time.perf_counter()
    results.append(simulate(records, strategy, nodes=4, capacity_blocks=20000))
    print(f"{strategy}: {time.perf_counter() - began:.2f} s")
print(f"{len(records)} requests x {len(STRATEGIES)} strategies: {time.perf_counter() - started:.2f} s on one core")
print(table(results))

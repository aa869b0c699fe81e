"""Every verdict a CI run judged, with its looks, n at stop and why it stopped.

Reads the results files (``pmc-*.json``) the run's pytest sessions wrote into a results directory,
those newer than a marker file the run touched when it started, and prints one Markdown row per
verdict, then a count. It exits 1 when it found no verdict (a stage that measured nothing) or
when a verdict is INCONCLUSIVE: issue 20 asks that every gated verdict decides in CI.

Usage: python scripts/ci_verdicts.py RESULTS_DIR --newer-than MARKER
benchmarks/results/ci_verdicts.md keeps the tables of consecutive fresh-clone runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pytest_mooncake.results.schema import Outcome, Verdict

HEADER = ("| session's topology | test (record) | verdict | outcome | looks | n at stop (after vs before) | stop |\n"
          "|---|---|---|---|---:|---|---|")


def rows(results: list[Path]) -> list[tuple[str, ...]]:
    found = []
    for path in results:
        document = json.loads(path.read_text("utf-8"))
        topology = (document.get("topology") or {}).get("mooncake_deployment", {}).get("topology", "—")
        for record in document.get("records", []):
            # Where every reader of the results finds them (harness.report_hooks, report.model).
            for verdict in map(Verdict.from_dict, record.get("data", {}).get("verdicts") or []):
                test = f"{record['test'].split('::')[-1]} ({record['name']})"
                found.append((topology, test, verdict.metric, verdict.outcome.value, str(verdict.looks),
                              f"{verdict.n_after} vs {verdict.n_before}", verdict.stop or "judged once"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--newer-than", type=Path, required=True, help="the marker the run touched when it started")
    args = parser.parse_args(argv)
    since = args.newer_than.stat().st_mtime
    results = sorted(path for path in args.results_dir.glob("pmc-*.json") if path.stat().st_mtime > since)
    found = rows(results)
    print(f"ci verdicts: {len(found)} verdicts in {len(results)} results files of this run")
    print(HEADER)
    for row in found:
        print("| " + " | ".join(row) + " |")
    undecided = [row for row in found if row[3] == Outcome.INCONCLUSIVE.value]
    first = sum(row[4] == "1" for row in found)
    print(f"ci verdicts: {len(found) - len(undecided)} decided ({first} at the first look), {len(undecided)} inconclusive")
    return 1 if not found or undecided else 0


if __name__ == "__main__":
    sys.exit(main())

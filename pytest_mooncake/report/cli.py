"""``pytest-mooncake report``: the evaluation report from one or more results files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pytest_mooncake.config.parsing import REPORT_FORMATS as FORMATS
from pytest_mooncake.config.parsing import parse_formats
from pytest_mooncake.errors import USAGE_ERROR
from pytest_mooncake.report.build import ReportOptions, build
from pytest_mooncake.report.labels import LANGUAGES
from pytest_mooncake.report.model import load_run, pairs_against, pairs_of


def _formats(text: str) -> tuple[str, ...]:
    try:
        return parse_formats(text) or FORMATS
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env_cost() -> float | None:
    # The same variable a pytest run reads for --mooncake-server-cost.
    value = os.environ.get("MOONCAKE_SERVER_COST")
    return float(value) if value else None


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="pytest-mooncake report",
        description="Build the evaluation report (Markdown and/or one self-contained HTML file) from results JSON.",
    )
    cli.add_argument("results", nargs="*", type=Path, help="results documents (<results_dir>/<run_id>.json)")
    cli.add_argument("--with-cache", type=Path, help="the run with the cache (guide 002); use with --baseline")
    cli.add_argument("--baseline", type=Path,
                     help="a run without the cache: each scenario's hit round is compared with the same round of the "
                          "results file (or --with-cache)")
    cli.add_argument("--format", type=_formats, default=FORMATS, help="md, html or md,html (default both)")
    cli.add_argument("--out", type=Path, default=Path("reports"), help="output directory (default ./reports)")
    cli.add_argument("--server-cost", type=float, default=_env_cost(),
                     help="monthly cost of one serving server (default $MOONCAKE_SERVER_COST); enables monthly savings")
    cli.add_argument("--servers", type=float, default=10.0,
                     help="servers the load needs without the cache; sets the offered load to what they carry at the "
                          "SLO (default 10)")
    cli.add_argument("--offered-load", type=float,
                     help="requests/s to carry at the SLO, for the server counts (default: what --servers baseline "
                          "servers carry)")
    cli.add_argument("--store-servers", type=float, help="Mooncake store servers to deploy, for the ROI table")
    cli.add_argument("--store-server-cost", type=float,
                     help="monthly cost of one Mooncake store server (default: --server-cost)")
    cli.add_argument("--headline", help="serving record the summary and cost model lead with "
                                        "(default: the first A/B record, else the first record)")
    cli.add_argument("--lang", choices=LANGUAGES, default="en", help="report language (default en)")
    cli.add_argument("--no-charts", action="store_true", help="skip the PNG charts (no matplotlib needed)")
    return cli


def cli_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    inputs = list(args.results) + ([args.with_cache] if args.with_cache else [])
    if not inputs:
        print("pytest-mooncake report: give at least one results file (or --with-cache A.json --baseline B.json)",
              file=sys.stderr)
        return 2
    try:
        runs = [load_run(path) for path in inputs]
        if args.baseline:
            baseline = load_run(args.baseline)
            pairs = [pair for run in runs for pair in pairs_against(run, baseline)]
            if not pairs:
                raise ValueError(f"no serving scenario with a hit round appears in both {args.baseline} and "
                                 f"{', '.join(map(str, inputs))}")
            runs.append(baseline)
        else:
            pairs = [pair for run in runs for pair in pairs_of(run)]
        options = ReportOptions(out=args.out, formats=args.format, server_cost=args.server_cost, servers=args.servers,
                                offered_load=args.offered_load, store_servers=args.store_servers,
                                store_server_cost=args.store_server_cost, lang=args.lang, charts=not args.no_charts,
                                headline=args.headline)
        built = build(runs, pairs, options)
    except (ValueError, RuntimeError) as exc:
        print(f"pytest-mooncake report: {exc}", file=sys.stderr)
        return USAGE_ERROR
    for path in built.files:
        print(path)
    print(f"recommendation: {built.recommendation.outcome} "
          f"({built.recommendation.passed}/{built.recommendation.total} verdicts passed)")
    return 0

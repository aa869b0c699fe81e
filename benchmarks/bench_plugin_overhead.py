"""What does pytest-mooncake cost a pytest run that uses nothing of it? (a benchmark script, not a test)

pytest loads every installed plugin in every run of its environment, so a project that merely shares
a virtualenv with pytest-mooncake pays its load. This times ``python -m pytest -q test_trivial.py``
in a fresh project outside any checkout, with the plugin and with ``-p no:mooncake`` (which stops
pytest before it imports us), in turns (A B A B ...: drift of the machine's speed hits both alike),
and prints the medians. The overhead judged is the median of the paired differences (each run with
the plugin minus the run without it just after): a pair shares the machine's state of that moment,
so a burst of load elsewhere shifts both of its runs, where it can move one median and not the
other (the difference of the medians, as issue 23 measured it, is printed beside it). It is judged on
CPU time (user + system, the child's own accounting): the plugin's cost is imports and hooks, all
CPU, and a shared CI machine's load stretches wall time by far more than 20 ms (wall is printed too).

Usage: python benchmarks/bench_plugin_overhead.py [--python PY] [--runs N] [--max-ms MS]
``--python`` is the interpreter of the environment to measure (default: this one); .ci/run gives
it a fresh venv holding only the base wheel (scripts/wheel-check.sh). With ``--max-ms`` the exit
status is 1 when the overhead is above MS.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TRIVIAL_TEST = "def test_trivial() -> None:\n    assert sum([1, 2]) == 3\n"


def _clean_env() -> dict[str, str]:
    """The caller's environment without what would make the run a mooncake run or import a
    source tree (MOONCAKE_* settings, PYTEST_ADDOPTS, PYTHONPATH), and with Python's default of
    writing bytecode: pytest rewrites the asserts of every module of a plugin's distribution and
    caches the result as bytecode, so under PYTHONDONTWRITEBYTECODE=1 (set in many container
    images) each run parses and compiles every pytest_mooncake module it imports, some 25 ms more."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("MOONCAKE_") and k not in ("PYTEST_ADDOPTS", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float


def _time_run(command: list[str], cwd: Path, env: dict[str, str]) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench_plugin_overhead: {' '.join(command)} exited {done.returncode} in {cwd}:\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Run(wall, cpu)


def measure(python: str, runs: int, warmup: int) -> tuple[list[Run], list[Run]]:
    """Each run with the plugin and without it, taken in turns."""
    with tempfile.TemporaryDirectory(prefix="pmc-overhead-") as tmp:
        project = Path(tmp)
        (project / "test_trivial.py").write_text(TRIVIAL_TEST)
        base = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py"]
        without = [*base, "-p", "no:mooncake"]
        env = _clean_env()
        loaded = subprocess.run([*base, "--help"], cwd=project, env=env, capture_output=True, text=True,
                                timeout=120, check=False)
        if "--mooncake-master" not in loaded.stdout:
            raise SystemExit(f"bench_plugin_overhead: pytest of {python} does not load pytest-mooncake "
                             "(its --help lists no --mooncake-* option): nothing to measure")
        for _ in range(warmup):
            _time_run(base, project, env)
            _time_run(without, project, env)
        with_plugin: list[Run] = []
        without_plugin: list[Run] = []
        for _ in range(runs):
            with_plugin.append(_time_run(base, project, env))
            without_plugin.append(_time_run(without, project, env))
    return with_plugin, without_plugin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the environment to measure")
    parser.add_argument("--runs", type=int, default=21, help="timed runs of each command (default 21)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each command first (default 2)")
    parser.add_argument("--max-ms", type=float, default=None, help="exit 1 when the overhead is above this")
    args = parser.parse_args(argv)
    with_plugin, without_plugin = measure(args.python, args.runs, args.warmup)
    print(f"pytest -q test_trivial.py, {args.runs} runs each in turns, {args.python}:")
    overhead: dict[str, float] = {}
    for what in ("cpu", "wall"):
        a = [getattr(run, what) * 1000 for run in with_plugin]
        b = [getattr(run, what) * 1000 for run in without_plugin]
        overhead[what] = statistics.median(x - y for x, y in zip(a, b, strict=True))
        print(f"  {what:4} with pytest-mooncake {statistics.median(a):4.0f} ms (min {min(a):.0f}, max {max(a):.0f}), "
              f"with -p no:mooncake {statistics.median(b):4.0f} ms (min {min(b):.0f}, max {max(b):.0f}): "
              f"overhead {overhead[what]:.1f} ms (difference of the medians {statistics.median(a) - statistics.median(b):.1f} ms)")
    verdict = ""
    if args.max_ms is not None:
        verdict = f" (limit {args.max_ms:g} ms: {'OK' if overhead['cpu'] <= args.max_ms else 'FAILED'})"
    print(f"plugin overhead: {overhead['cpu']:.1f} ms of CPU, median of the paired differences{verdict}")
    return 1 if args.max_ms is not None and overhead["cpu"] > args.max_ms else 0


if __name__ == "__main__":
    sys.exit(main())

"""Mutation check of the modules whose bugs would make a verdict or a cleanup lie.

For each module, mutmut plants one small bug at a time and runs only that module's fast unit
tests; a mutant no test turns red "survived". The score of a module is killed / (mutants -
explained equivalents); below THRESHOLD on any module the check fails and prints the
survivors with their diff. Equivalent mutants (no test can tell them apart from the original)
are listed with the reason in scripts/mutation_equivalents.toml.

Which modules a run checks is chosen by content, so that it works the same on a fresh clone
(where no branch to compare with exists): benchmarks/results/mutation.md records, beside each
score, a hash of the module's source (and mutated scope) and one of its tests. ``--stale`` checks
every module whose hashes differ from the recorded ones, in full; ``--rotate`` adds the day's
rotation: one module, or for a slow one a slice of its mutants (those whose number ends in
certain digits), bounded by ``--rotation-budget`` seconds of its recorded time. The rotation
moves on each day (UTC), module after module and slice after slice, so every mutant of every
module is checked over time even when nothing changes. A run that checks no mutant fails.

Usage: python scripts/mutation_check.py [MODULE ...] [--stale] [--rotate] [--record] [--list]
  MODULE             a key of MODULES (e.g. qualify/reuse.py), checked in full
                     (no MODULE, --stale or --rotate: all of them)
  --stale            every module whose source or tests hash differs from the record
  --rotate           the day's rotation (--day YYYY-MM-DD to pick another day)
  --record           rewrite the rows (score and hashes) of the modules checked in full, only those
  --list             print what would be checked, and why, without checking it
"""

from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

if sys.version_info >= (3, 11):
    import tomllib
else:  # mutmut itself pulls in toml on Python 3.10
    import toml as tomllib

REPO = Path(__file__).resolve().parent.parent
EQUIVALENTS = REPO / "scripts" / "mutation_equivalents.toml"
RECORD = REPO / "benchmarks" / "results" / "mutation.md"
THRESHOLD = 0.90
# CI's share of time for the rotation (2 cores): a module recorded slower is checked a slice at a time.
ROTATION_BUDGET_S = 150.0
MAX_SLICES = 10  # slices are sets of last digits of the mutant number
PACKAGE = "pytest_mooncake"


@dataclass(frozen=True)
class Target:
    tests: list[str]  # the fast unit tests that own the module
    functions: list[str] | None = None  # only these (mutmut's mangled names, globs); None: all
    # The module also runs in processes the tests spawn (the janitor's watchdog): they must import
    # the mutated copy. Not for the rest: a pytest subprocess in a pytester directory would then
    # load mutmut's trampolines without mutmut's config.
    in_subprocesses: bool = False


MODULES: dict[str, Target] = {
    "serving/stats.py": Target(["tests/serving/test_stats.py", "tests/serving/test_yuen.py"]),
    "serving/student_t.py": Target(["tests/serving/test_yuen.py"]),
    "serving/sequential.py": Target(["tests/test_sequential.py"]),
    # The rules and outcomes every verdict is judged by.
    "results/schema.py": Target(["tests/test_schema.py", "tests/serving/test_stats.py"]),
    "qualify/reuse.py": Target(["tests/test_reuse.py", "tests/test_mooncake_evaluation.py", "tests/serving/test_negative_control.py",
                                "tests/test_breakdown.py"]),
    "qualify/breakdown.py": Target(["tests/test_breakdown.py"]),
    # The timing definitions only: what counts as the first token, the gaps, E2E, TPOT, the send lag.
    "serving/client.py": Target(["tests/serving/test_client_timing.py", "tests/serving/test_client.py"], [
        "xǁRequestRecordǁsend_lag_s", "x_tpot", "xǁ_Streamǁfeed", "x__content", "xǁStreamingClientǁsend"]),
    "cluster/integrity.py": Target(["tests/test_integrity.py"]),
    # The hit ratios and the block-by-block prompts that make a replay's hits equal the prediction.
    "qualify/traces.py": Target(["tests/test_traces.py"], ["x_theoretical_hit_ratio", "x_leading_hits", "x_block_token_ids",
                                                    "x_prompt_ids"]),
    "config/options.py": Target(["tests/test_options_units.py", "tests/test_options.py"]),
    # How a given setting is found on each route (the OPTIONS data are checked against the declarations).
    "config/routes.py": Target(["tests/test_options_units.py", "tests/test_options.py"], ["x_add_options", "x_given_routes"]),
    "results/baseline.py": Target(["tests/test_baseline.py"]),
    "qualify/capacity.py": Target(["tests/test_capacity.py", "tests/test_mooncake_evaluation.py"]),
    "runtime/executor.py": Target(["tests/test_executor.py"]),
    "runtime/janitor.py": Target(["tests/test_janitor.py", "tests/test_executor.py"], in_subprocesses=True),
}
# mutmut's statuses that mean a test noticed the mutant: a crash or a hang is noticed too, and
# "suspicious" is a test process ended by an unexpected signal (a mutant that signals pytest).
DETECTED = {"killed", "timeout", "segfault", "suspicious", "caught by type check"}


@dataclass
class Survivor:
    name: str
    status: str
    function: str
    removed: list[str]
    added: list[str]
    diff: str

    def matches(self, entry: dict[str, str]) -> bool:
        return (entry["function"] == self.function and entry["from"].strip() == "\n".join(self.removed)
                and entry["to"].strip() == "\n".join(self.added))


@dataclass
class Score:
    module: str
    part: Slice | None = None  # None: every mutant of the module
    total: int = 0
    killed: int = 0
    equivalent: list[tuple[Survivor, str]] = field(default_factory=list)
    survivors: list[Survivor] = field(default_factory=list)
    seconds: float = 0.0
    hashes: tuple[str, str] = ("", "")  # of the source and tests as they were copied to be mutated

    @property
    def value(self) -> float:
        judged = self.total - len(self.equivalent)
        return self.killed / judged if judged else 1.0


def _function(mutant: str) -> str:
    """``pytest_mooncake.qualify.reuse.x_evaluate__mutmut_3`` -> ``evaluate``; methods as ``Class.method``."""
    mangled = mutant.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("xǁ"):
        return ".".join(mangled[2:].split("ǁ"))
    return mangled[2:]


def _mutant_functions(path: Path) -> dict[str, str]:
    """Source of every function mutmut wrote into ``path`` (originals and mutants), by its mangled name."""
    source = path.read_text()
    return {
        node.name: textwrap.dedent(ast.get_source_segment(source, node, padded=True) or "")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name
    }


def _survivor(functions: dict[str, str], name: str, status: str) -> Survivor:
    # The diff `mutmut show` prints, without a process per mutant (a few hundred cost minutes).
    mangled = name.rsplit(".", 1)[1]
    original = mangled.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    plain = _function(name).rsplit(".", 1)[-1]
    before = functions[original].replace(original, plain).splitlines()
    after = functions[mangled].replace(mangled, plain).splitlines()
    diff = list(difflib.unified_diff(before, after, lineterm="", n=1))[2:]
    removed = [line[1:].strip() for line in diff if line.startswith("-")]
    added = [line[1:].strip() for line in diff if line.startswith("+")]
    return Survivor(name, status, _function(name), removed, added, "\n".join(diff))


def _mutmut(workdir: Path, *args: str, in_subprocesses: bool = False) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH reaches the processes the tests spawn. With in_subprocesses they import the mutated
    # copy, where the mutant under test (an environment variable) is active too; otherwise this
    # tree's unmutated copy, not whatever checkout the environment has installed.
    env = {**os.environ, "PYTHONPATH": str(workdir / "mutants" if in_subprocesses else workdir)}
    mutmut = Path(sys.executable).with_name("mutmut")
    try:
        return subprocess.run([str(mutmut), *args], cwd=workdir, env=env, capture_output=True, text=True, check=False)
    finally:
        _reap_leftovers(workdir)


def _reap_leftovers(workdir: Path) -> None:
    """Kill what a mutant left running (a broken stop path leaks the test's fake services)."""
    for process in psutil.process_iter(["cmdline"]):
        if str(workdir) in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
            try:
                process.kill()
            except psutil.Error:
                pass


def _mutant_prefix(module: str) -> str:
    return f"{PACKAGE}." + module.removesuffix(".py").replace("/", ".") + "."


def _prepare(module: str, tests: list[str], workdir: Path) -> None:
    shutil.copytree(REPO / PACKAGE, workdir / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    # What the tests read besides the package: recorded traces and configs, the docs' settings
    # table and the script that generates it, the README's first commands.
    for tree in ("tests", "fixtures", "scripts", "docs"):
        shutil.copytree(REPO / tree, workdir / tree, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "README.md", workdir / "README.md")
    pyproject = (REPO / "pyproject.toml").read_text()
    selection = ", ".join(f'"{t}"' for t in tests)
    pyproject += (
        "\n[tool.mutmut]\n"
        f'source_paths = ["{PACKAGE}"]\n'
        f'only_mutate = ["{PACKAGE}/{module}"]\n'
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        'also_copy = ["fixtures", "scripts", "docs", "README.md"]\n'
    )
    (workdir / "pyproject.toml").write_text(pyproject)
    # Exists before mutmut starts: Python caches a missing PYTHONPATH entry as unusable.
    (workdir / "mutants").mkdir()


def mutant_names(module: str, part: Slice | None = None) -> list[str]:
    """mutmut's patterns (fnmatch) for the mutants to run: the target's functions, of the slice; [] for all."""
    functions = MODULES[module].functions or (["*"] if part else [])
    return [f"{_mutant_prefix(module)}{f}__mutmut_*{part.glob if part else ''}" for f in functions]


def check(module: str, equivalents: list[dict[str, str]], children: int, part: Slice | None = None) -> Score:
    score = Score(module, part)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        workdir = Path(tmp)
        target = MODULES[module]
        score.hashes = hashes(module)
        _prepare(module, target.tests, workdir)
        run = _mutmut(workdir, "run", "--max-children", str(children), *mutant_names(module, part),
                      in_subprocesses=target.in_subprocesses)
        if run.returncode != 0:
            raise SystemExit(f"mutmut run failed for {module} (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        listed = _mutmut(workdir, "results", "--all", "true").stdout
        functions = _mutant_functions(workdir / "mutants" / PACKAGE / module)
        for name, status in re.findall(r"^\s*(\S+): (.+)$", listed, re.MULTILINE):
            if status == "not checked":  # outside the target's functions or the slice
                continue
            score.total += 1
            if status in DETECTED:
                score.killed += 1
                continue
            survivor = _survivor(functions, name, status)
            reason = next((e["why"] for e in equivalents if e["module"] == module and survivor.matches(e)), None)
            if reason is None:
                score.survivors.append(survivor)
            else:
                score.equivalent.append((survivor, reason))
    score.seconds = time.monotonic() - started
    return score


Read = Callable[[str], bytes]


def _read_file(path: str) -> bytes:
    return (REPO / path).read_bytes()


def hashes(module: str, read: Read = _read_file) -> tuple[str, str]:
    """(source, tests) content hashes of ``module``: the source with its mutated scope, and its tests' paths and text."""
    target = MODULES[module]
    source = hashlib.sha256(read(f"{PACKAGE}/{module}") + repr(target.functions).encode())
    tests = hashlib.sha256()
    for path in target.tests:
        tests.update(path.encode() + b"\0" + read(path) + b"\0")
    return source.hexdigest()[:12], tests.hexdigest()[:12]


@dataclass(frozen=True)
class Row:
    """One module's line of the record: its last score's time and the hashes it was measured on."""

    line: str
    seconds: float
    source: str | None
    tests: str | None


def recorded(text: str) -> dict[str, Row]:
    rows = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        hashed = len(cells) >= 10
        rows[line.split("`")[1]] = Row(line, float(cells[7]), cells[8].strip("`") if hashed else None,
                                       cells[9].strip("`") if hashed else None)
    return rows


def stale_modules(rows: dict[str, Row], read: Read = _read_file) -> list[str]:
    """The modules whose source or tests differ from what their recorded score was measured on."""
    return [m for m in MODULES if m not in rows or (rows[m].source, rows[m].tests) != hashes(m, read)]


@dataclass(frozen=True)
class Slice:
    """The mutants of a module whose number ends in one of ``digits`` (slice ``index`` of ``count``)."""

    index: int
    count: int

    @property
    def digits(self) -> str:
        return "".join(str(d) for d in range(10) if d % self.count == self.index)

    @property
    def glob(self) -> str:
        return f"[{self.digits}]"

    def __str__(self) -> str:
        return f"slice {self.index + 1} of {self.count}: mutants numbered *[{self.digits}]"


@dataclass(frozen=True)
class Check:
    module: str
    why: str
    part: Slice | None = None  # None: every mutant

    @property
    def label(self) -> str:
        return self.module if self.part is None else f"{self.module} ({self.part})"


def rotation(day: datetime.date, rows: dict[str, Row], budget_s: float = ROTATION_BUDGET_S) -> Check:
    """The day's module, in MODULES order; a module recorded slower than ``budget_s`` is split into
    slices of its mutants, and each of its turns takes the next slice."""
    modules = list(MODULES)
    turn = day.toordinal()
    module = modules[turn % len(modules)]
    seconds = rows[module].seconds if module in rows else 0.0
    count = min(MAX_SLICES, max(1, math.ceil(seconds / budget_s)))
    part = None if count == 1 else Slice(turn // len(modules) % count, count)
    return Check(module, f"rotation of {day.isoformat()}", part)


def select(modules: list[str], *, stale: bool, rotate: bool, day: datetime.date, rows: dict[str, Row],
           budget_s: float = ROTATION_BUDGET_S, read: Read = _read_file) -> list[Check]:
    """What a run checks: the named modules, the stale ones, and the day's rotation unless it is
    already checked in full; with none of them, every module."""
    checks = [Check(m, "named") for m in modules]
    if stale:
        checks += [Check(m, "changed since its recorded score") for m in stale_modules(rows, read) if m not in modules]
    if rotate:
        turn = rotation(day, rows, budget_s)
        if all(c.module != turn.module for c in checks):
            checks.append(turn)
    if not (modules or stale or rotate):
        checks = [Check(m, "all") for m in MODULES]
    return checks


def _record(scores: list[Score]) -> None:
    """Rewrite the rows (score and hashes) of the modules just checked in full; the others keep theirs."""
    rows = {m: row.line for m, row in recorded(RECORD.read_text() if RECORD.exists() else "").items()}
    for s in scores:
        if s.part is not None:
            continue
        target = MODULES[s.module]
        scope = "" if target.functions is None else " (" + ", ".join(_function(f"m.{f}") for f in target.functions) + ")"
        source, tests = s.hashes
        rows[s.module] = (f"| `{s.module}`{scope} | {', '.join(f'`{t}`' for t in target.tests)} | {s.total} | {s.killed} | "
                          f"{len(s.equivalent)} | {len(s.survivors)} | {s.value:.1%} | {s.seconds:.0f} | `{source}` | `{tests}` |")
    lines = [
        "# Mutation scores",
        "",
        "Written by `python scripts/mutation_check.py --record` (mutmut, one module at a time, only that",
        "module's unit tests, 2 mutants in parallel on a 2-core host). Score = killed / (mutants -",
        "explained equivalents); CI fails below 90%. Source and Tests are the hashes of what the score",
        "was measured on (scripts/mutation_check.py: hashes); CI checks every module whose hashes differ.",
        "",
        "| Module | Tests | Mutants | Killed | Equivalent | Survived | Score | Seconds | Source | Tests |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
        *(rows[m] for m in MODULES if m in rows),
        "",
    ]
    RECORD.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE")
    parser.add_argument("--stale", action="store_true", help="every module whose source or tests changed since its recorded score")
    parser.add_argument("--rotate", action="store_true", help="the day's rotation: a module, or a slice of a slow one")
    parser.add_argument("--day", type=datetime.date.fromisoformat, default=datetime.datetime.now(datetime.timezone.utc).date(),
                        help="the rotation's day, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--rotation-budget", type=float, default=ROTATION_BUDGET_S, metavar="SECONDS",
                        help="a module recorded slower is rotated a slice of its mutants at a time")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--list", action="store_true", help="print the selection and exit")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants tested in parallel")
    args = parser.parse_args()
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown modules {sorted(unknown)}; choose from {list(MODULES)}")
    rows = recorded(RECORD.read_text() if RECORD.exists() else "")
    checks = select(args.modules, stale=args.stale, rotate=args.rotate, day=args.day, rows=rows,
                    budget_s=args.rotation_budget)
    for item in checks:
        print(f"mutation check: {item.label} [{item.why}]", flush=True)
    if args.list:
        return 0
    equivalents = tomllib.loads(EQUIVALENTS.read_text()).get("equivalent", [])
    scores, failed = [], []
    for item in checks:
        score = check(item.module, equivalents, args.children, item.part)
        scores.append(score)
        print(f"{item.label}: {score.value:.1%} ({score.killed} of {score.total} killed, {len(score.equivalent)} equivalent, "
              f"{len(score.survivors)} survived) in {score.seconds:.0f} s", flush=True)
        for survivor in score.survivors:
            print(f"  SURVIVED ({survivor.status}) {survivor.name}\n" + "\n".join("    " + line for line in survivor.diff.splitlines()))
        if score.value < THRESHOLD:
            failed.append(item.label)
    if args.record:
        _record(scores)
    checked = sum(s.total for s in scores)
    summary = ", ".join(f"{s.module}{'' if s.part is None else ' ' + s.part.glob} {s.value:.1%}" for s in scores)
    print(f"mutation check: {len(scores)} checks, {checked} mutants in {sum(s.seconds for s in scores):.0f} s: {summary}")
    if checked == 0:
        print("mutation check FAILED: it checked no mutant, so it proved nothing (a wrong slice or module scope?)")
        return 1
    if failed:
        print(f"mutation check FAILED: below {THRESHOLD:.0%} on {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

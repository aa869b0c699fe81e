"""Mutation check of the modules whose bugs would make a verdict or a cleanup lie.

For each module, mutmut plants one small bug at a time and runs only that module's fast unit
tests; a mutant no test turns red "survived". The score of a module is killed / (mutants -
explained equivalents); below THRESHOLD on any module the check fails and prints the
survivors with their diff. Equivalent mutants (no test can tell them apart from the original)
are listed with the reason in scripts/mutation_equivalents.toml.

Usage: python scripts/mutation_check.py [MODULE ...] [--changed-since REF] [--record]
  MODULE             a key of MODULES (e.g. reuse.py); default: all of them
  --changed-since    only the modules whose source or tests differ from the merge base with REF
  --record           rewrite benchmarks/results/mutation.md with the scores of this run
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
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
    "serving/stats.py": Target(["tests/serving/test_stats.py"]),
    # The rules and outcomes every verdict is judged by.
    "results/schema.py": Target(["tests/test_schema.py", "tests/serving/test_stats.py"]),
    "qualify/reuse.py": Target(["tests/test_reuse.py", "tests/test_mooncake_evaluation.py", "tests/serving/test_negative_control.py"]),
    # The timing definitions only: what counts as the first token, the gaps, E2E, TPOT, the send lag.
    "serving/client.py": Target(["tests/serving/test_client_timing.py", "tests/serving/test_client.py"], [
        "xǁRequestRecordǁsend_lag_s", "x_tpot", "xǁ_Streamǁfeed", "x__content", "xǁStreamingClientǁsend"]),
    "cluster/integrity.py": Target(["tests/test_integrity.py"]),
    # The hit ratios and the block-by-block prompts that make a replay's hits equal the prediction.
    "qualify/traces.py": Target(["tests/test_traces.py"], ["x_theoretical_hit_ratio", "x_leading_hits", "x_block_token_ids",
                                                    "x_prompt_ids"]),
    "config/options.py": Target(["tests/test_options_units.py", "tests/test_options.py"]),
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
    total: int = 0
    killed: int = 0
    equivalent: list[tuple[Survivor, str]] = field(default_factory=list)
    survivors: list[Survivor] = field(default_factory=list)
    seconds: float = 0.0

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


def check(module: str, equivalents: list[dict[str, str]], children: int) -> Score:
    score = Score(module)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        workdir = Path(tmp)
        target = MODULES[module]
        _prepare(module, target.tests, workdir)
        names = [f"{_mutant_prefix(module)}{f}__mutmut_*" for f in target.functions or []]
        run = _mutmut(workdir, "run", "--max-children", str(children), *names, in_subprocesses=target.in_subprocesses)
        if run.returncode != 0:
            raise SystemExit(f"mutmut run failed for {module} (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        listed = _mutmut(workdir, "results", "--all", "true").stdout
        functions = _mutant_functions(workdir / "mutants" / PACKAGE / module)
        for name, status in re.findall(r"^\s*(\S+): (.+)$", listed, re.MULTILINE):
            if status == "not checked":  # outside the target's functions
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


def changed_modules(ref: str) -> list[str]:
    merge_base = subprocess.run(["git", "merge-base", ref, "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    if merge_base.returncode != 0:
        print(f"mutation check: no merge base with {ref!r} here, so every module is checked", flush=True)
        return list(MODULES)
    base = merge_base.stdout.strip()
    changed = set(subprocess.run(["git", "diff", "--name-only", base], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.split())
    shared = {"tests/conftest.py", "tests/serving/conftest.py", "tests/fakes/fake_service.py", "pyproject.toml",
              "scripts/mutation_check.py", "scripts/mutation_equivalents.toml"}
    if changed & shared:
        return list(MODULES)
    return [m for m, t in MODULES.items() if f"{PACKAGE}/{m}" in changed or changed & set(t.tests)]


def _record(scores: list[Score]) -> None:
    """Rewrite the rows of the modules just checked; the others keep their last recorded row."""
    rows = {}
    if RECORD.exists():
        rows = {line.split("`")[1]: line for line in RECORD.read_text().splitlines() if line.startswith("| `")}
    for s in scores:
        target = MODULES[s.module]
        scope = "" if target.functions is None else " (" + ", ".join(_function(f"m.{f}") for f in target.functions) + ")"
        rows[s.module] = (f"| `{s.module}`{scope} | {', '.join(f'`{t}`' for t in target.tests)} | {s.total} | {s.killed} | "
                          f"{len(s.equivalent)} | {len(s.survivors)} | {s.value:.1%} | {s.seconds:.0f} |")
    lines = [
        "# Mutation scores",
        "",
        "Written by `python scripts/mutation_check.py --record` (mutmut, one module at a time, only that",
        "module's unit tests, 2 mutants in parallel on a 2-core host). Score = killed / (mutants -",
        "explained equivalents); CI fails below 90%.",
        "",
        "| Module | Tests | Mutants | Killed | Equivalent | Survived | Score | Seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(rows[m] for m in MODULES if m in rows),
        "",
    ]
    RECORD.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE")
    parser.add_argument("--changed-since", metavar="REF")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants tested in parallel")
    args = parser.parse_args()
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown modules {sorted(unknown)}; choose from {list(MODULES)}")
    modules = args.modules or (changed_modules(args.changed_since) if args.changed_since else list(MODULES))
    equivalents = tomllib.loads(EQUIVALENTS.read_text()).get("equivalent", [])
    scores, failed = [], []
    for module in modules:
        score = check(module, equivalents, args.children)
        scores.append(score)
        print(f"{module}: {score.value:.1%} ({score.killed} of {score.total} killed, {len(score.equivalent)} equivalent, "
              f"{len(score.survivors)} survived) in {score.seconds:.0f} s", flush=True)
        for survivor in score.survivors:
            print(f"  SURVIVED ({survivor.status}) {survivor.name}\n" + "\n".join("    " + line for line in survivor.diff.splitlines()))
        if score.value < THRESHOLD:
            failed.append(module)
    if args.record:
        _record(scores)
    print(f"mutation check: {len(modules)} modules in {sum(s.seconds for s in scores):.0f} s")
    if failed:
        print(f"mutation check FAILED: below {THRESHOLD:.0%} on {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The mutation gate's choice of what to check: by content, so a fresh clone checks something.

Only the selection is tested here; running mutmut takes minutes (scripts/mutation_check.py).
"""

from __future__ import annotations

import datetime
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mutation_check.py"
DAY = datetime.date(2026, 12, 4)


@pytest.fixture(scope="module")
def mc() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["mutation_check"]


def _files(mc: ModuleType) -> dict[str, bytes]:
    """Every module's source and tests, as a fake checkout's content."""
    paths = {f"{mc.PACKAGE}/{m}" for m in mc.MODULES} | {t for target in mc.MODULES.values() for t in target.tests}
    return {path: f"content of {path}".encode() for path in paths}


def _record(mc: ModuleType, files: dict[str, bytes], seconds: dict[str, int] | None = None) -> str:
    """A mutation.md whose every row was measured on ``files``."""
    lines = ["| Module | Tests | Mutants | Killed | Equivalent | Survived | Score | Seconds | Source | Tests |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for module in mc.MODULES:
        source, tests = mc.hashes(module, files.__getitem__)
        lines.append(f"| `{module}` | `t.py` | 10 | 10 | 0 | 0 | 100.0% | {(seconds or {}).get(module, 30)} | "
                     f"`{source}` | `{tests}` |")
    return "\n".join(lines) + "\n"


def test_hashes_follow_the_source_and_the_tests_apart(mc: ModuleType) -> None:
    files = _files(mc)
    module = "serving/client.py"
    source, tests = mc.hashes(module, files.__getitem__)
    files[f"{mc.PACKAGE}/{module}"] += b" changed"
    changed_source = mc.hashes(module, files.__getitem__)
    assert changed_source[0] != source and changed_source[1] == tests
    files[mc.MODULES[module].tests[-1]] += b" changed"
    changed_tests = mc.hashes(module, files.__getitem__)
    assert changed_tests[0] == changed_source[0] and changed_tests[1] != tests
    assert len(source) == len(tests) == 12


def test_a_fresh_clone_with_its_recorded_content_has_nothing_stale(mc: ModuleType) -> None:
    files = _files(mc)
    rows = mc.recorded(_record(mc, files))
    assert set(rows) == set(mc.MODULES) and mc.stale_modules(rows, files.__getitem__) == []
    files["tests/test_reuse.py"] += b"\n# a new test"
    # only the module whose tests include it
    assert mc.stale_modules(rows, files.__getitem__) == ["qualify/reuse.py"]


def test_a_row_without_hashes_or_no_row_is_stale(mc: ModuleType) -> None:
    files = _files(mc)
    text = _record(mc, files)
    legacy = "\n".join(line.rsplit("|", 3)[0] + "|" if "`results/schema.py`" in line else line
                       for line in text.splitlines() if "`qualify/capacity.py`" not in line)
    rows = mc.recorded(legacy)
    assert rows["results/schema.py"].source is None and rows["results/schema.py"].seconds == 30
    assert mc.stale_modules(rows, files.__getitem__) == ["results/schema.py", "qualify/capacity.py"]


def test_the_rotation_visits_every_module_then_every_slice(mc: ModuleType) -> None:
    files = _files(mc)
    rows = mc.recorded(_record(mc, files, {"runtime/executor.py": 509}))
    n = len(mc.MODULES)
    days = [DAY + datetime.timedelta(days=i) for i in range(4 * n)]
    turns = [mc.rotation(day, rows, budget_s=150.0) for day in days]
    assert sorted(t.module for t in turns[:n]) == sorted(mc.MODULES)
    slow = [t.part for t in turns if t.module == "runtime/executor.py"]
    # 509 s recorded against 150 s: four slices, one per turn, which together hold every mutant.
    assert {p.count for p in slow} == {4} and sorted(p.index for p in slow) == [0, 1, 2, 3]
    assert "".join(sorted("".join(p.digits for p in slow))) == "0123456789"
    assert all(t.part is None for t in turns if t.module != "runtime/executor.py")
    assert turns[0] == mc.rotation(DAY, rows, budget_s=150.0)  # the same day, the same choice


def test_a_slice_runs_only_the_mutants_numbered_with_its_digits(mc: ModuleType) -> None:
    part = mc.Slice(1, 4)
    assert (part.digits, part.glob) == ("159", "[159]")
    assert mc.mutant_names("runtime/executor.py") == []
    assert mc.mutant_names("runtime/executor.py", part) == ["pytest_mooncake.runtime.executor.*__mutmut_*[159]"]
    scoped = mc.mutant_names("serving/client.py", part)
    assert scoped[0] == "pytest_mooncake.serving.client.xǁRequestRecordǁsend_lag_s__mutmut_*[159]"
    assert len(scoped) == len(mc.MODULES["serving/client.py"].functions)


def test_ci_checks_the_stale_modules_and_the_rotation(mc: ModuleType) -> None:
    files = _files(mc)
    rows = mc.recorded(_record(mc, files))
    turn = mc.rotation(DAY, rows)
    fresh = mc.select([], stale=True, rotate=True, day=DAY, rows=rows, read=files.__getitem__)
    assert fresh == [turn] and turn.why == "rotation of 2026-12-04"
    other = next(m for m in mc.MODULES if m != turn.module)
    files[f"{mc.PACKAGE}/{other}"] += b" changed"
    changed = mc.select([], stale=True, rotate=True, day=DAY, rows=rows, read=files.__getitem__)
    assert changed == [mc.Check(other, "changed since its recorded score"), turn]
    files[f"{mc.PACKAGE}/{turn.module}"] += b" changed"  # checked in full anyway: no second, partial check
    both = mc.select([], stale=True, rotate=True, day=DAY, rows=rows, read=files.__getitem__)
    assert [c.module for c in both] == [m for m in mc.MODULES if m in (other, turn.module)]
    assert all(c.part is None for c in both)
    assert [c.module for c in mc.select([], stale=False, rotate=False, day=DAY, rows=rows)] == list(mc.MODULES)
    named = mc.select([other], stale=True, rotate=False, day=DAY, rows=rows, read=files.__getitem__)
    assert [c.module for c in named] == [other, turn.module] and named[0].why == "named"


def test_a_run_that_checks_nothing_fails(mc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    record = tmp_path / "mutation.md"
    record.write_text(_record(mc, {path: mc._read_file(path) for path in _files(mc)}))
    monkeypatch.setattr(mc, "RECORD", record)
    monkeypatch.setattr(sys, "argv", ["mutation_check.py", "--stale"])
    assert mc.main() == 1
    out = capsys.readouterr().out
    assert "mutation check: 0 checks, 0 mutants" in out and "FAILED: it checked no mutant" in out
    monkeypatch.setattr(sys, "argv", ["mutation_check.py", "--stale", "--rotate", "--day", "2026-12-04", "--list"])
    assert mc.main() == 0
    assert capsys.readouterr().out == f"mutation check: {mc.rotation(DAY, mc.recorded(record.read_text())).label} " \
                                      "[rotation of 2026-12-04]\n"

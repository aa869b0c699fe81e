"""The root conftest.py: the checkout's tests and suites refuse to run against another copy of the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def _pytest(tmp_path: Path, *args: str, stub: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if stub:
        # Another copy of the package, first on the path and imported before any conftest, as the
        # entry point imports an installed one (-p no:mooncake: the real plugin is not loaded).
        (tmp_path / "pytest_mooncake").mkdir()
        (tmp_path / "pytest_mooncake" / "__init__.py").write_text("")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
        args = ("-p", "pytest_mooncake", *args)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:mooncake",
                           "--collect-only", "-q", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_checkouts_tests_refuse_another_copy_of_the_package(tmp_path: Path) -> None:
    result = _pytest(tmp_path, str(REPO / "tests" / "test_root_conftest.py"), stub=True)
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"pytest_mooncake is imported from {tmp_path.resolve() / 'pytest_mooncake'}, not from this checkout" in result.stderr
    assert "PYTHONPATH=" in result.stderr


def test_the_checkouts_tests_run_against_the_checkout(tmp_path: Path) -> None:
    result = _pytest(tmp_path, str(REPO / "tests" / "test_root_conftest.py"), stub=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 tests collected" in result.stdout


def test_other_projects_are_not_checked(tmp_path: Path) -> None:
    (tmp_path / "test_unrelated.py").write_text("def test_unrelated():\n    assert True\n")
    result = _pytest(tmp_path, "test_unrelated.py", stub=True)
    assert result.returncode == 0, result.stdout + result.stderr

"""What a base install and the wheel hold: the plugin loads without the extras, every
package, suite, profile, the bundled trace and the example configs are in the wheel's package
list, and the [suites] extra has every package a suite skips without."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import tomllib

from pytest_mooncake.config import profiles
from pytest_mooncake.qualify.traces import bundled_trace

from .conftest import REPO

# The extras' modules: a base install has none of them.
EXTRAS = ("aiohttp", "numpy", "matplotlib", "allure", "allure_commons", "allure_pytest", "tokenizers",
          "hypothesis", "mooncake", "pytest_asyncio", "pytest_benchmark")
# Their pytest11 entry points, which would fail on the blocked modules before ours loads.
EXTRA_PLUGINS = ("asyncio", "benchmark", "allure_pytest", "hypothesispytest")

RUN_WITHOUT_EXTRAS = textwrap.dedent(f"""
    import sys

    class NoExtras:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EXTRAS!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

    sys.meta_path.insert(0, NoExtras())
    import pytest
    sys.exit(pytest.main(sys.argv[1:]))
""")


def _pytest_without_extras(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_unrelated.py").write_text("def test_unrelated():\n    assert True\n")
    disable = [arg for name in EXTRA_PLUGINS for arg in ("-p", f"no:{name}")]
    return subprocess.run([sys.executable, "-c", RUN_WITHOUT_EXTRAS, "-p", "no:cacheprovider", *disable, *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_an_unrelated_test_passes_without_the_extras(tmp_path: Path) -> None:
    result = _pytest_without_extras(tmp_path, "-q", "test_unrelated.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_help_lists_the_options_without_the_extras(tmp_path: Path) -> None:
    result = _pytest_without_extras(tmp_path, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--mooncake-master" in result.stdout and "--mooncake-segment-size" in result.stdout


def _wheel_packages() -> dict[str, Path]:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools["package-dir"]
    found = {}
    for package in setuptools["packages"]:
        prefix = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len, default=None)
        if prefix is None:
            found[package] = REPO / package.replace(".", "/")
        else:
            rest = package[len(prefix):].lstrip(".")
            found[package] = REPO / mapping[prefix] / rest.replace(".", "/")
    return found


def test_every_package_and_suite_directory_is_in_the_wheel() -> None:
    listed = {path.resolve() for path in _wheel_packages().values()}
    on_disk = {init.parent.resolve() for root in ("pytest_mooncake", "suites") for init in (REPO / root).rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert all(path.is_dir() for path in listed)


def test_the_wheel_carries_the_profiles_the_trace_and_the_example_configs() -> None:
    packages = _wheel_packages()
    assert {p.name for p in packages["pytest_mooncake.bundled.configs"].glob("*.yaml")} >= {
        "test_config.yaml", "test_config_simple.yaml", "user_scenarios.yaml"}
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert package_data["pytest_mooncake.bundled.configs"] == ["*.yaml"]
    assert {p.stem for p in packages["pytest_mooncake.bundled.profiles"].glob("*.yaml")} >= {"cpu-ci"}
    assert (packages["pytest_mooncake.bundled.traces"] / bundled_trace().name).is_file()
    assert bundled_trace().is_file()
    assert "cpu-ci" in profiles.available(Path("/nonexistent"))


def test_the_suites_extra_has_every_package_a_suite_skips_without() -> None:
    # A suite that skips "X is not installed: install pytest-mooncake with its [suites] extra" gets X
    # from that extra, so README's install line runs the store suites with 0 such skips.
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    suites_extra = " ".join(extras["suites"])
    needed = {"hypothesis": "hypothesis", "pytest-benchmark": "pytest_benchmark"}
    for distribution in needed:
        assert distribution in suites_extra, f"[suites] lacks {distribution}"
    assert "pytest-mooncake[serving]" in extras["suites"]
    assert any("suites" in extra for extra in extras["dev"]), "[dev] must include [suites]"
    texts = "\n".join(path.read_text() for path in (REPO / "suites").rglob("*.py"))
    assert "pytest-mooncake[dev]" not in texts, "a suite's skip reason names [dev]: users install [suites]"

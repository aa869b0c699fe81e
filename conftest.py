"""The checkout's own runs test the checkout.

pytest loads the plugin through its ``pytest11`` entry point from wherever the environment
installed pytest-mooncake, before any conftest. A non-editable install, or a virtualenv made
for another clone, would then run this checkout's ``tests/`` and ``suites/`` against another
copy of the package: every green test would vouch for code nobody is changing. A run that
names this checkout's ``tests/`` or ``suites/`` (or runs the default ``testpaths``) stops at
start-up, exit code 4, with where the package was imported from and the fix. Runs of the
installed suites (``pytest --pyargs pytest_mooncake.suites``) and of other projects never
load this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent
OWN_TREES = (CHECKOUT / "tests", CHECKOUT / "suites")


def _names_own_tree(config: pytest.Config) -> bool:
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == CHECKOUT or any(path == tree or tree in path.parents for tree in OWN_TREES):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    import pytest_mooncake

    imported = Path(pytest_mooncake.__file__).resolve().parent
    if imported.parent != CHECKOUT and _names_own_tree(config):
        raise pytest.UsageError(
            f"pytest_mooncake is imported from {imported}, not from this checkout {CHECKOUT}: its tests/ and "
            f"suites/ would test another copy. Fix: install the checkout editable (bash scripts/install.sh, or "
            f"pip install -e '{CHECKOUT}[dev]'), or run with PYTHONPATH={CHECKOUT}."
        )

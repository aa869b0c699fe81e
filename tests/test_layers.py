"""The package's shape: a small public API that suites keep to, and every export resolves and is used.

The public API is ``pytest_mooncake.__all__`` (what every suite needs) and the ``__all__`` of each
documented domain module in ``pytest_mooncake.DOMAIN_MODULES`` (capacity search, traces, the
transfer bench, ...). A name belongs there only while a suite or the docs use it.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from pathlib import Path

import pytest_mooncake

from .conftest import REPO

# What a suite author gets at the top level: about 25 names, not whatever the suites import.
MAX_TOP_LEVEL = 28


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import of the package in ``path``; names empty for ``import m``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_mooncake"):
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("pytest_mooncake")]
    return found


def _public(module: str) -> set[str]:
    if module == "pytest_mooncake":
        return set(pytest_mooncake.__all__)
    if module in pytest_mooncake.DOMAIN_MODULES:
        return set(importlib.import_module(module).__all__)
    return set()


def test_suites_import_only_the_public_api() -> None:
    wrong = {}
    for path in sorted((REPO / "suites").rglob("*.py")):
        for module, names in _imports(path):
            private = [name for name in names if name not in _public(module)] if names else [module]
            if private:
                wrong.setdefault(str(path.relative_to(REPO)), []).append(f"{module}: {', '.join(private)}")
    assert wrong == {}, "suites import what the public API does not offer: export it (pytest_mooncake/__init__.py " \
                        "or a DOMAIN_MODULES module's __all__) and document it, or use a fixture"


def test_every_public_name_is_what_its_module_defines() -> None:
    """A function named like its module (``replay``) is the function, not the module."""
    for name in pytest_mooncake.__all__:
        value = getattr(pytest_mooncake, name)
        if name in pytest_mooncake._MODULES:
            assert isinstance(value, types.ModuleType), name
        elif name != "__version__":
            assert value is getattr(importlib.import_module(pytest_mooncake._EXPORTS[name]), name), name
            assert not isinstance(value, types.ModuleType), name
    for module in pytest_mooncake.DOMAIN_MODULES:
        loaded = importlib.import_module(module)
        assert all(hasattr(loaded, name) for name in loaded.__all__), module


def test_the_top_level_api_stays_small() -> None:
    assert len(pytest_mooncake._EXPORTS) <= MAX_TOP_LEVEL, sorted(pytest_mooncake._EXPORTS)


def test_every_export_is_used_by_the_suites_or_the_docs() -> None:
    texts = [path.read_text() for path in (*(REPO / "suites").rglob("*.py"), *(REPO / "docs").rglob("*.md"),
                                           REPO / "README.md")]
    exported = {*pytest_mooncake._EXPORTS, *(name for module in pytest_mooncake.DOMAIN_MODULES
                                             for name in importlib.import_module(module).__all__)}
    unused = sorted(name for name in exported
                    if not any(re.search(rf"\b{re.escape(name)}\b", text) for text in texts))
    assert unused == [], "exported but used by no suite and no docs page: drop them or document them"

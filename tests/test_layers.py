"""The package's shape: suites use only the public API, and every export resolves."""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest_mooncake

from .conftest import REPO


def _package_imports(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_mooncake"):
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names if alias.name.startswith("pytest_mooncake")]
    return modules


def test_suites_import_only_the_public_api() -> None:
    inner = {str(path.relative_to(REPO)): [m for m in _package_imports(path) if m != "pytest_mooncake"]
             for path in sorted((REPO / "suites").rglob("*.py"))}
    assert {path: modules for path, modules in inner.items() if modules} == {}, \
        "suites import internal modules; export what they need from pytest_mooncake/__init__.py"


def test_every_public_name_is_what_its_module_defines() -> None:
    """A function named like its module (``replay``) is the function, not the module."""
    for name in pytest_mooncake.__all__:
        value = getattr(pytest_mooncake, name)
        if name in pytest_mooncake._MODULES:
            assert isinstance(value, types.ModuleType), name
        elif name != "__version__":
            assert value is getattr(importlib.import_module(pytest_mooncake._EXPORTS[name]), name), name
            assert not isinstance(value, types.ModuleType), name

"""Steps, attachments and labels for reports; Allure when it is installed and active.

Suites call these unconditionally. Without allure-pytest, or without ``--alluredir``,
they do nothing but run the step's body, so Allure stays optional.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

try:
    import allure
    from allure_commons._core import plugin_manager as _allure_plugins
except ImportError:  # allure-pytest is an optional extra
    allure = None
    _allure_plugins = None


def _active() -> bool:
    # allure-pytest registers its listener only when --alluredir is given.
    return allure is not None and bool(_allure_plugins and _allure_plugins.list_name_plugin())


@contextmanager
def step(title: str) -> Iterator[None]:
    with allure.step(title) if _active() else nullcontext():
        yield


def attach_json(name: str, data: Any) -> None:
    if _active():
        allure.attach(
            json.dumps(data, indent=2, default=str), name=name, attachment_type=allure.attachment_type.JSON
        )


def attach_file(path: Path, name: str | None = None) -> None:
    if _active() and path.exists():
        kind = allure.attachment_type.PNG if path.suffix == ".png" else allure.attachment_type.TEXT
        allure.attach.file(str(path), name=name or path.name, attachment_type=kind)


def show(config: pytest.Config, text: str) -> None:
    """Print a result line in the terminal now, past output capturing (quiet under -q)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.get_verbosity() < 0:
        return
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        reporter.write_line("")
        reporter.write_line(text)


def label(name: str, value: str) -> None:
    if _active():
        allure.dynamic.label(name, value)

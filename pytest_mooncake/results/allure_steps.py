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
except ImportError:  # allure-pytest is an optional extra
    allure = None


# Service logs attached to failed tests: the tail is what explains a failure, and a
# whole vLLM log can be hundreds of megabytes.
LOG_TAIL_BYTES = 256 * 1024
_LOGS = pytest.StashKey[dict[str, Path]]()
# The current test's labels: the hooks label the scenario from markers and a suite may too.
_labelled: set[tuple[str, str]] = set()
# The session's plugins, set by the reporting hooks (bind): suites call these without a config.
_session_plugins: pytest.PytestPluginManager | None = None


def bind(config: pytest.Config) -> None:
    """Report for this session, from its activation to its end (``unbind``)."""
    global _session_plugins
    _session_plugins = config.pluginmanager


def unbind(config: pytest.Config) -> None:
    global _session_plugins
    if _session_plugins is config.pluginmanager:  # a pytester session inside leaves ours alone
        _session_plugins = None


def active() -> bool:
    """Whether Allure is recording (allure-pytest installed and ``--alluredir`` given)."""
    # allure-pytest registers its listener, what records, only when --alluredir is given.
    return allure is not None and _session_plugins is not None and _session_plugins.has_plugin("allure_listener")


def register_log(config: pytest.Config, name: str, path: Path | None) -> None:
    """Name a service log (master, store node, vLLM) to attach to every test that fails."""
    if path is not None:
        config.stash.setdefault(_LOGS, {})[name] = Path(path)


def service_logs(config: pytest.Config) -> dict[str, Path]:
    return dict(config.stash.get(_LOGS, {}))


def attach_log(path: Path, name: str) -> None:
    """The last LOG_TAIL_BYTES of a log, as text."""
    if not (active() and path.exists()):
        return
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        tail = handle.read().decode("utf-8", "replace")
    if size > LOG_TAIL_BYTES:
        tail = f"[last {LOG_TAIL_BYTES} of {size} bytes of {path}]\n" + tail
    allure.attach(tail, name=name, attachment_type=allure.attachment_type.TEXT)


@contextmanager
def step(title: str) -> Iterator[None]:
    with allure.step(title) if active() else nullcontext():
        yield


def attach_json(name: str, data: Any) -> None:
    if active():
        allure.attach(
            json.dumps(data, indent=2, default=str), name=name, attachment_type=allure.attachment_type.JSON
        )


def attach_statistics(name: str, data: dict[str, Any]) -> None:
    """A serving scenario's results as ``NAME statistics``: rounds keep their stats and
    counters, per-request records shrink to their count (they are in the results JSON)."""
    rounds = [{**r, "records": len(r["records"])} for r in data.get("rounds", [])]
    attach_json(f"{name} statistics", {**data, "rounds": rounds})


def attach_file(path: Path, name: str | None = None) -> None:
    if active() and path.exists():
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
    if active() and (name, value) not in _labelled:
        _labelled.add((name, value))
        allure.dynamic.label(name, value)


def forget_labels() -> None:
    """Start a new test's label set (called by the reporting hooks before each test)."""
    _labelled.clear()

"""Shared helpers of the acceptance suites (the plugin provides the fixtures).

The serving suites need the serving extra (aiohttp, numpy); without it (a base or
``[mooncake]`` install) they are not collected, and the run's header says why.
"""

from __future__ import annotations

import importlib.util

import pytest

_SERVING_MISSING = [name for name in ("aiohttp", "numpy") if importlib.util.find_spec(name) is None]
collect_ignore = ["serving"] if _SERVING_MISSING else []


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not _SERVING_MISSING:
        return []
    return [f"mooncake: serving suites not collected: {', '.join(_SERVING_MISSING)} not installed "
            "(the [suites] extra: pip install -e '.[suites]' in a checkout; README: Install)"]

"""The one use of pytest's private API (``_pytest``): a pytest release that moves it breaks this
module's test (tests/test_adapters.py), not the plugin at large."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _pytest.main import wrap_session


def run_as_session(config: pytest.Config, body: Callable[[pytest.Config, pytest.Session], int]) -> int:
    """Run ``body`` as the whole session, as pytest runs ``--fixtures``: configure, session start and
    finish around it, its return value the exit status; pytest has no public hook for this."""
    return int(wrap_session(config, body))

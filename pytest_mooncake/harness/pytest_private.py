"""The uses of pytest's private API (``_pytest``, private attributes of its objects): a pytest release
that moves them breaks this module's test (tests/test_adapters.py), not the plugin at large."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from _pytest.main import wrap_session


def run_as_session(config: pytest.Config, body: Callable[[pytest.Config, pytest.Session], int]) -> int:
    """Run ``body`` as the whole session, as pytest runs ``--fixtures``: configure, session start and
    finish around it, its return value the exit status; pytest has no public hook for this."""
    return int(wrap_session(config, body))


def fixture_definitions(item: pytest.Item) -> list[Sequence[Any]]:
    """The definitions of every fixture ``item`` uses, each name's overriding chain (pytest keeps
    them in the item's ``_fixtureinfo``; there is no public accessor)."""
    return list(getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values())


def definitions_of(item: pytest.Item, name: str) -> Sequence[Any]:
    """The definitions of fixture ``name`` visible from ``item``, through the session's fixture manager."""
    return item.session._fixturemanager.getfixturedefs(name, item) or ()

"""A session fixture that refuses to set up tells its cause once.

pytest re-raises a failed session fixture's exception at the set-up of every test that needs
it, so a misconfigured deployment printed its whole cause once per test (three times in the
field). The first test's error carries the message; each later one names that test and the
first line only. The refusals are also what the end of the run says kept results from being
written.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

_SEEN = pytest.StashKey[dict[int, tuple[BaseException, str]]]()


class SetupRefused(pytest.fail.Exception):
    """A fixture found the deployment unusable: the message says why and how to fix it."""

    # As pytest does for its outcomes: the summary line reads "SetupRefused: ...", not the module path.
    __module__ = "builtins"

    def __init__(self, message: str) -> None:
        super().__init__(message, pytrace=False)

    @property
    def headline(self) -> str:
        return str(self.msg).splitlines()[0]


def refuse(message: str) -> NoReturn:
    """Stop the fixture's set-up with ``message``, without the traceback of what led to it."""
    raise SetupRefused(message) from None


def shorten_repeat(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    """Cut a refusal already told at an earlier test's set-up down to a reference to it."""
    if report.when != "setup" or call.excinfo is None or not isinstance(call.excinfo.value, SetupRefused):
        return
    refusal = call.excinfo.value
    seen = item.config.stash.setdefault(_SEEN, {})
    first = seen.setdefault(id(refusal), (refusal, item.nodeid))[1]
    if first != item.nodeid:
        report.longrepr = f"{refusal.headline} (told in full at the set-up of {first})"


def refusals(config: pytest.Config) -> list[str]:
    """The first line of each refusal of this session, in the order they happened."""
    return [refusal.headline for refusal, _ in config.stash.get(_SEEN, {}).values()
            if isinstance(refusal, SetupRefused)]

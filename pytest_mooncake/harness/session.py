"""Per-session state kept in ``config.stash``, and when a session becomes a mooncake session.

The plugin is inert until it is *active*: pytest imports it in every run of its environment, and a
run that uses nothing of it must not pay for it (no temp directory, no signal handler, no results,
no header, no cluster imports). It becomes active, once per session, at the first of:

- start-up, when any mooncake setting is given: a ``--mooncake-*`` option (``--mooncake-doctor``
  included), a ``mooncake_*`` ini key or a ``MOONCAKE_*`` environment variable (a YAML file is
  named by one of those). Bad input then stops the run at start-up, as before;
- collection, when a collected test uses one of the plugin's fixtures or markers;
- the first call of ``state`` or ``get_config``: any fixture from ``factories``, or a suite's own
  use of the session.

Under pytest-xdist the plugin refuses (``XDIST_REFUSAL``) where it would become active: its
clusters, results file and reports belong to one session.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import pytest

from pytest_mooncake.config.routes import CONFIG_KEY, given_routes

if TYPE_CHECKING:
    from pytest_mooncake.config.options import MooncakeConfig
    from pytest_mooncake.results.store import Results
    from pytest_mooncake.runtime.janitor import Janitor

XDIST_REFUSAL = ("pytest-mooncake does not run under pytest-xdist: its clusters, results and reports belong to one "
                 "session. Fix: run the mooncake tests without -n/--dist.")


class SessionState:
    """A mooncake session's state. A plain class, not a dataclass: it is defined in every pytest run
    of the environment, and a dataclass costs its definition a millisecond."""

    def __init__(self, config: MooncakeConfig, rootdir: Path | None = None) -> None:
        import secrets

        self.config = config
        self.authkey = secrets.token_bytes(16)
        self.run_id = f"pmc-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.rootdir = rootdir if rootdir is not None else Path.cwd()
        self.results_path: Path | None = None
        self.summary: list[str] = []
        # What the run changed in attached clusters, printed at the end of every session.
        self.left_behind: list[str] = []

    @cached_property
    def janitor(self) -> Janitor:
        from pytest_mooncake.runtime.janitor import Janitor

        return Janitor()

    @cached_property
    def results(self) -> Results:
        from pytest_mooncake.results.store import Results

        return Results(self.run_id, self.config, self.rootdir)

    @cached_property
    def socket_dir(self) -> Path:
        # Unix socket paths must stay under ~100 bytes, so not under pytest's basetemp.
        return Path(tempfile.mkdtemp(prefix="pmc-"))

    def close(self) -> None:
        # Only what was made: an active session that spawned nothing has no janitor to close.
        if "janitor" in self.__dict__:
            self.janitor.close()
        if "socket_dir" in self.__dict__:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


STATE_KEY = pytest.StashKey[SessionState]()
_SIGTERM_INSTALLED = pytest.StashKey[bool]()


def setting_given(config: pytest.Config) -> bool:
    """Whether the run names any mooncake setting (option, ini key or environment variable)."""
    return bool(config.getoption("mooncake_doctor", False)) or bool(given_routes(config))


def under_xdist(config: pytest.Config) -> bool:
    """An xdist worker, or a controller that distributes (``-n``, ``--dist``): xdist's own options."""
    if hasattr(config, "workerinput"):
        return True
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def is_active(config: pytest.Config) -> bool:
    return STATE_KEY in config.stash


def activate(config: pytest.Config) -> SessionState:
    """Make this session a mooncake session (once): settings, state, reports, SIGTERM handling."""
    if STATE_KEY in config.stash:
        return config.stash[STATE_KEY]
    if under_xdist(config):
        raise pytest.UsageError(XDIST_REFUSAL)
    from pytest_mooncake.config.options import load_config

    settings = load_config(config)
    config.stash[CONFIG_KEY] = settings
    session = config.stash[STATE_KEY] = SessionState(settings, rootdir=config.rootpath)
    if settings.compare:
        try:
            session.results.store.load_baseline(settings.compare)
        except (FileNotFoundError, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None
    from pytest_mooncake.harness import eviction, report_hooks

    # Registered after pytest_configure, its pytest_configure still runs (a historic hook).
    config.pluginmanager.register(report_hooks, "mooncake-reporting")
    config.pluginmanager.register(eviction, "mooncake-eviction")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        config.stash[_SIGTERM_INSTALLED] = True
    return session


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM would end Python without running finalizers; as KeyboardInterrupt,
    # pytest tears every fixture down, so spawned services stop with it. Once only: a second
    # SIGTERM (a supervisor repeating itself) would interrupt that teardown and end in pages of
    # chained tracebacks, with the services left running.
    signal.signal(signal.SIGTERM, _sigterm_again)
    raise KeyboardInterrupt("SIGTERM")


def _sigterm_again(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("pytest-mooncake: SIGTERM again: still stopping the services this run spawned "
                     "(SIGKILL ends at once and leaves them running)\n")


def deactivate(config: pytest.Config) -> None:
    """Undo ``activate`` at the end of the session: the signal handler, spawned services, temp dirs."""
    if config.stash.get(_SIGTERM_INSTALLED, False):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        del config.stash[_SIGTERM_INSTALLED]
    if STATE_KEY in config.stash:
        config.stash[STATE_KEY].close()


def state(config: pytest.Config) -> SessionState:
    """The session's state; the first call makes the session a mooncake session."""
    return activate(config)


def get_config(config: pytest.Config) -> MooncakeConfig:
    return activate(config).config

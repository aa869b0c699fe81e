"""Per-session state kept in ``config.stash``: the config, the janitor, agent secrets."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.results.store import Results
from pytest_mooncake.runtime.janitor import Janitor


@dataclass
class SessionState:
    config: MooncakeConfig
    janitor: Janitor = field(default_factory=Janitor)
    authkey: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    # Unix socket paths must stay under ~100 bytes, so not under pytest's basetemp.
    socket_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pmc-")))
    run_id: str = field(default_factory=lambda: f"pmc-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
    results: Results = field(init=False)
    results_path: Path | None = None
    summary: list[str] = field(default_factory=list)
    # What the run changed in attached clusters, printed at the end of every session.
    left_behind: list[str] = field(default_factory=list)
    rootdir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        self.results = Results(self.run_id, self.config, self.rootdir)

    def close(self) -> None:
        self.janitor.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


STATE_KEY = pytest.StashKey[SessionState]()


def state(config: pytest.Config) -> SessionState:
    return config.stash[STATE_KEY]


def get_config(config: pytest.Config) -> MooncakeConfig:
    return config.stash[STATE_KEY].config

"""Qualification profiles: threshold sets per hardware class, chosen with ``--mooncake-profile``.

A profile is a YAML file ``ci/profiles/NAME.yaml`` (or any path given instead of a name)::

    description: H100 80GB nodes, RDMA between vLLM and the store
    thresholds:
      ttft_reduction: 0.60
      min_gbps: 20.0

Its thresholds fill in the ``mooncake_perf`` keywords a test leaves unset; the marker wins,
so a suite states what it must always meet and the profile tunes the rest per hardware.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from pytest_mooncake.config.markers import PERF_KEYS, thresholds
from pytest_mooncake.config.routes import CONFIG_KEY

# In the wheel (pyproject maps ci/profiles there) and beside the package in a source checkout;
# the project's rootdir is searched first.
_PACKAGE = Path(__file__).resolve().parents[1]
_BUNDLED_PROFILES = _PACKAGE / "bundled" / "profiles"
_SOURCE_PROFILES = _PACKAGE.parent / "ci" / "profiles"
_LOADED = pytest.StashKey["Profile | None"]()


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    thresholds: Mapping[str, float]


def search_dirs(rootdir: Path) -> list[Path]:
    dirs = [rootdir / "ci" / "profiles", _BUNDLED_PROFILES, _SOURCE_PROFILES]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def available(rootdir: Path) -> dict[str, Path]:
    """Profile name -> file, the rootdir's profiles shadowing the bundled ones."""
    found: dict[str, Path] = {}
    for directory in reversed(search_dirs(rootdir)):
        found.update({path.stem: path for path in sorted(directory.glob("*.yaml"))})
    return dict(sorted(found.items()))


def load_profile(name: str, rootdir: Path) -> Profile:
    """Read and check a profile; ValueError says what is wrong and what exists."""
    path = Path(name).expanduser()
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        known = available(rootdir)
        if name not in known:
            dirs = ", ".join(str(d) for d in search_dirs(rootdir))
            raise ValueError(f"unknown profile {name!r}; available: {', '.join(known) or 'none'} "
                             f"(searched {dirs}; or pass the path of a YAML file)")
        path = known[name]
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("thresholds"), dict):
        raise ValueError(f"profile {path} needs a mapping 'thresholds:' of mooncake_perf keywords to numbers")
    values: dict[str, float] = {}
    for key, value in document["thresholds"].items():
        if key not in PERF_KEYS:
            raise ValueError(f"profile {path}: unknown threshold {key!r}; accepted: {', '.join(PERF_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"profile {path}: threshold {key} = {value!r} must be a number")
        values[key] = float(value)
    return Profile(path.stem, path, str(document.get("description", "")), MappingProxyType(values))


def session_profile(config: pytest.Config) -> Profile | None:
    """The session's profile, loaded once; UsageError when it cannot be."""
    if _LOADED not in config.stash:
        name = config.stash[CONFIG_KEY].profile
        try:
            config.stash[_LOADED] = load_profile(name, config.rootpath) if name else None
        except ValueError as exc:
            raise pytest.UsageError(f"--mooncake-profile: {exc}") from None
    return config.stash[_LOADED]


def profile_thresholds(config: pytest.Config) -> dict[str, float]:
    """The profile's thresholds (empty without a profile)."""
    profile = session_profile(config)
    return dict(profile.thresholds) if profile else {}


def effective_thresholds(item: pytest.Item, keys: Collection[str] | None = None) -> dict[str, float]:
    """Profile thresholds overlaid with the test's own ``mooncake_perf`` values.

    ``keys`` limits what the profile contributes to the thresholds that make sense for the
    test (a negative control must not inherit the profile's ``ttft_reduction``)."""
    profile = {k: v for k, v in profile_thresholds(item.config).items() if keys is None or k in keys}
    return {**profile, **thresholds(item)}

"""What one setting is: its names on every route, its parser, its defaults and its YAML keys.

``options.MooncakeConfig`` declares each setting as a field (``declare(...)``), so its name, type
and everything below are written once; the CLI, ini and environment names derive from the name.
The pytest options, the YAML reader and the README's table are all built from these declarations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import pytest

from pytest_mooncake.config import parsing as p

_SETTING = "pytest_mooncake.setting"
# What the README and --help show for the attached default's master host.
_MASTER_HOST_DOC = "MASTER_HOST"


@dataclass(frozen=True)
class Joined:
    """A value the guides' YAML splits over keys of one section, e.g. ``mooncake.master_ip`` and
    ``mooncake.master_port``: read when every key is there or has a default."""

    section: str
    template: str  # str.format over the section's keys, e.g. "{master_ip}:{master_port}"
    defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def keys(self) -> tuple[str, ...]:
        import string  # every pytest run imports this module; only YAML files use it

        return tuple(name for _, name, _, _ in string.Formatter().parse(self.template) if name)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f"{self.section}.{key}" for key in self.keys)


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    parse: Callable[[object], Any]
    # Raw forms, parsed like a given value; None: unset. ``attached`` replaces ``default`` when the
    # session attaches to a master; it may name the master's host as {master_host}.
    default: str | None = None
    attached: str | None = None
    metavar: str = "VALUE"
    secret: bool = False
    # The guides' YAML keys ("section.key"), the first one a file holds winning; ``joined`` for a
    # value spread over several keys. The setting's own name is a top-level key unless top_level
    # is False, and it wins over the guides' keys.
    yaml: tuple[str, ...] = ()
    joined: Joined | None = None
    top_level: bool = True
    # The name users write (flag, ini key, variable) where the field's own name says more.
    alias: str | None = None

    @property
    def flag(self) -> str:
        return "--mooncake-" + (self.alias or self.name).replace("_", "-")

    @property
    def ini(self) -> str:
        return "mooncake_" + (self.alias or self.name)

    @property
    def env(self) -> str:
        return "MOONCAKE_" + (self.alias or self.name).upper()

    @property
    def switch(self) -> bool:
        """A bare switch on the command line; ini, environment and YAML take yes/no."""
        return self.parse is p.parse_bool

    @property
    def yaml_keys(self) -> tuple[str, ...]:
        """The plain YAML keys in the order they win."""
        return ((self.name,) if self.top_level else ()) + self.yaml

    @property
    def default_text(self) -> str:
        """The defaults as the README and --help show them; empty when there is none."""
        attached = self.attached.format(master_host=_MASTER_HOST_DOC) if self.attached is not None else None
        if self.default and attached is not None:
            return f"{self.default} spawned / {attached} attached"
        if attached is not None:
            return f"{attached} attached"
        return self.default or ""

    @property
    def cli_help(self) -> str:
        return f"{self.help} (default: {self.default_text})" if self.default_text else self.help

    def fallback(self, master_host: str | None) -> Any:
        """The parsed default of an unset setting, given the attached master's host (None: spawned)."""
        raw = self.default
        if master_host is not None and self.attached is not None:
            raw = self.attached.format(master_host=master_host)
        return None if raw is None else self.parse(raw)

    def parse_from(self, raw: object, source: str) -> Any:
        """``raw`` parsed; a bad value is a UsageError naming the key, source, value and valid forms."""
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise pytest.UsageError(
                f"{self.ini} = {raw!r} (from {source}): {exc}.\n"
                f"Set it with {self.flag}, the ini key {self.ini}, "
                f"or the environment variable {self.env}."
            ) from None


def declare(help: str, parse: Callable[[object], Any], default: str | None = None, **details: Any) -> Any:
    """A dataclass field declared as a setting; the field's name becomes the setting's. No dataclass
    default: the defaults depend on the mode (spawned or attached) and are filled in by the loader."""
    return field(metadata={_SETTING: functools.partial(Setting, help=help, parse=parse, default=default, **details)})


def declared(cls: type) -> tuple[Setting, ...]:
    """The settings a dataclass declares with ``declare``, in field order."""
    return tuple(f.metadata[_SETTING](name=f.name) for f in fields(cls) if _SETTING in f.metadata)

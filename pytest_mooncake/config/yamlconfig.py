"""The original guides' test-config YAML (guide 001 ``test_config.yaml``, guide 002
``test_config_simple.yaml``), read onto our settings.

Every key but two comes from the settings' declarations (``settings.Setting``: the guides'
``section.key`` paths, values joined from several keys, the setting's own name at the top level).
The two are the guides' structures: ``test_scenarios`` (scenario definitions, keys in
``SCENARIO_KEYS``, whose names also select the scenarios) and ``machines.<name>.ip``. Any other key,
and any bad scenario value, is a usage error at start-up: a ``mooncak:`` typo must not turn an attach
run into a spawn run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_mooncake.config import parsing as p
from pytest_mooncake.config.markers import PERF_KEYS, SCENARIO_ALIASES
from pytest_mooncake.config.settings import Setting

EXTRA_KEYS = ("scenario_definitions", "machines")
# The guides' structures beside the settings' keys.
_STRUCTURES = ("test_scenarios", "machines")

# The keys of a test_scenarios entry and their parsers; the thresholds (PERF_KEYS) pass
# through to the test's mooncake_perf marker.
SCENARIO_KEYS: Mapping[str, Callable[[object], object]] = {
    "num_requests": p.parse_positive_int,
    "reuse_ratio": p.parse_ratio,
    "document_tokens": p.parse_int,
    "question_tokens": p.parse_int,
    "max_tokens": p.parse_positive_int,
    "turns": p.parse_int,
    "rounds": p.parse_rounds,
    "concurrency": p.parse_positive_int,
    "prompt_template": p.parse_text,
    "description": p.parse_text,
    **{key: p.parse_float for key in PERF_KEYS},
}


def _unknown_key(where: str, key: object, accepted: Iterable[str]) -> pytest.UsageError:
    accepted = sorted(accepted)
    import difflib  # only for a bad key: every pytest run imports this module

    close = difflib.get_close_matches(str(key), accepted, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return pytest.UsageError(f"{where}: unknown key {key!r}{hint}; accepted: {', '.join(accepted)}")


def parse_scenario(name: str, definition: object, source: str) -> dict[str, Any]:
    """A ``test_scenarios`` entry with every value parsed; UsageError names the YAML key,
    ``source``, the value and the valid forms."""
    if not isinstance(definition, Mapping):
        raise pytest.UsageError(f"test_scenarios.{name} = {definition!r} (from {source}): expected a mapping of "
                                f"{', '.join(sorted(SCENARIO_KEYS))}")
    parsed: dict[str, Any] = {}
    for key, raw in definition.items():
        parse = SCENARIO_KEYS.get(key)
        if parse is None:
            raise _unknown_key(f"test_scenarios.{name} (from {source})", key, SCENARIO_KEYS)
        try:
            parsed[key] = parse(raw)
        except ValueError as exc:
            raise pytest.UsageError(f"test_scenarios.{name}.{key} = {raw!r} (from {source}): {exc}") from None
    return parsed


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, tuple[object, str]] = {}

    def fail(self, key: str, problem: str) -> pytest.UsageError:
        return pytest.UsageError(
            f"{self.path}: key {key!r} {problem}.\n"
            "Fix the file; see the settings table in docs/operators/configuration.md for the accepted keys."
        )

    def section(self, document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        body = document.get(name)
        if body is None:
            return {}
        if not isinstance(body, Mapping):
            raise self.fail(name, f"must be a mapping, got {type(body).__name__} {body!r}")
        return body

    def put(self, setting: str, value: object, key: str) -> None:
        self.values[setting] = (value, f"YAML {self.path} key {key}")


def _read_document(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise pytest.UsageError(
            f"Config file {path} does not exist (cwd {Path.cwd()}).\n"
            "Fix: pass an existing file to --mooncake-config / mooncake_config / MOONCAKE_CONFIG."
        )
    import yaml  # here, not at the top: pytest imports the plugin in every run, most name no file

    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise pytest.UsageError(
            f"Config file {path} is not valid YAML{where}: {problem}.\n"
            "Fix the syntax (indentation, quotes, colons) and run again."
        ) from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise pytest.UsageError(
            f"Config file {path} must hold a mapping at the top level, got {type(document).__name__}."
        )
    return document


def _sections(settings: Sequence[Setting]) -> dict[str, set[str]]:
    """Section -> the keys the settings read from it, joined ones included."""
    sections: dict[str, set[str]] = {}
    for setting in settings:
        paths = [*setting.yaml, *(setting.joined.paths if setting.joined else ())]
        for section, key in (path.split(".", 1) for path in paths):
            sections.setdefault(section, set()).add(key)
    return sections


def _joined(reader: _Reader, document: Mapping[str, Any], settings: Sequence[Setting]) -> None:
    """Values spread over several keys; a key whose partners are missing is an error, not ignored."""
    used: set[str] = set()
    spread = [(setting, setting.joined) for setting in settings if setting.joined]
    for setting, joined in spread:
        section = reader.section(document, joined.section)
        parts = {**joined.defaults, **{key: section[key] for key in joined.keys if key in section}}
        if all(key in parts for key in joined.keys):
            reader.put(setting.name, joined.template.format(**parts), " + ".join(joined.paths))
            used.update(f"{joined.section}.{key}" for key in joined.keys if key in section)
    for _, joined in spread:
        section = reader.section(document, joined.section)
        for key in joined.keys:
            if key in section and f"{joined.section}.{key}" not in used:
                missing = [path for k, path in zip(joined.keys, joined.paths, strict=True)
                           if k not in section and k not in joined.defaults]
                raise reader.fail(f"{joined.section}.{key}", f"needs {' and '.join(missing)} beside it")


def _scenarios(reader: _Reader, document: Mapping[str, Any]) -> None:
    definitions = reader.section(document, "test_scenarios")
    if definitions:
        source = f"YAML {reader.path}"
        reader.values["scenario_definitions"] = (
            {SCENARIO_ALIASES.get(k, k): parse_scenario(k, v, source) for k, v in definitions.items()},
            "YAML test_scenarios",
        )
        # The scenarios to run, unless a top-level scenarios list says otherwise.
        reader.put("scenarios", list(definitions), "test_scenarios")


def _machines(reader: _Reader, document: Mapping[str, Any]) -> None:
    machines: dict[str, str] = {}
    for name, body in reader.section(document, "machines").items():
        ip = body.get("ip") if isinstance(body, Mapping) else None
        if not isinstance(ip, str):
            raise reader.fail(f"machines.{name}", "must be a mapping with an 'ip' string")
        machines[str(name)] = ip
    if machines:
        reader.values["machines"] = (machines, "YAML machines")


def _lookup(reader: _Reader, document: Mapping[str, Any], path: str) -> tuple[bool, object]:
    """Whether the document holds ``path`` ("key" or "section.key") and its value, null included."""
    *section, key = path.split(".", 1)
    body = reader.section(document, section[0]) if section else document
    return key in body, body.get(key)


def load_yaml_settings(path: Path, settings: Sequence[Setting]) -> dict[str, tuple[object, str]]:
    """Raw values of ``settings`` with their sources (parsing happens later); UsageError on a key
    that none of them, nor the guides' structures, reads."""
    reader = _Reader(path)
    document = _read_document(path)
    sections = _sections(settings)
    for name, accepted in sections.items():
        for key in reader.section(document, name):
            if key not in accepted:
                raise _unknown_key(f"{path}: section {name!r}", key, accepted)
    _joined(reader, document, settings)
    _scenarios(reader, document)
    _machines(reader, document)
    top_level = {*sections, *_STRUCTURES, *(s.name for s in settings if s.top_level)}
    for key in document:
        if key not in top_level:
            raise _unknown_key(f"{path}: top level", key, top_level)
    for setting in settings:
        # A setting named like a guides' section (model) leaves that name to the section.
        for key in (key for key in setting.yaml_keys if key not in sections):
            found, value = _lookup(reader, document, key)
            if found:
                reader.put(setting.name, value, key)
                break
    return reader.values

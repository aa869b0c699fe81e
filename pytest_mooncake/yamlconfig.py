"""The original guides' test-config YAML, mapped onto our settings.

Accepted keys (guide 001 ``test_config.yaml`` and guide 002
``test_config_simple.yaml``): ``proxy.url``, ``openai_api.{base_url,api_key,model_name}``,
``model.{name,max_tokens,temperature}``, ``machines.<name>.ip``,
``mooncake.{protocol,device_name,global_segment_size,local_buffer_size,master_ip,
master_port,metadata_port,metrics_port}``, ``test_scenarios`` (a mapping of
scenario definitions, keys in ``SCENARIO_KEYS``), ``scenarios`` (a list of names) and
``test.{rounds,requests_per_scenario,concurrency}``. Any setting name
(``store_nodes: 3``) is accepted at the top level as well. Any other key, and any bad
scenario value, is a usage error at start-up: a ``mooncak:`` typo must not turn an attach
run into a spawn run.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import parsing as p
from .markers import PERF_KEYS
from .options import SETTINGS_BY_NAME

EXTRA_KEYS = ("scenario_definitions", "machines")
# The guides' name for a scenario -> our marker name.
SCENARIO_ALIASES = {"multi_turn_conversation": "multi_turn"}

_SECTION_KEYS: dict[str, dict[str, str]] = {
    "proxy": {"url": "openai_base_url"},
    "openai_api": {"base_url": "openai_base_url", "api_key": "api_key", "model_name": "model"},
    "model": {"name": "model", "max_tokens": "max_tokens", "temperature": "temperature"},
    "mooncake": {
        "protocol": "protocol",
        "device_name": "rdma_devices",
        "global_segment_size": "segment_size",
        "local_buffer_size": "local_buffer_size",
    },
    "test": {
        "rounds": "rounds",
        "requests_per_scenario": "requests_per_scenario",
        "concurrency": "concurrency",
    },
}
# Handled by _mooncake_endpoints, not by the table.
_ENDPOINT_KEYS = {"master_ip", "master_port", "metadata_port", "metrics_port"}
# Later sections win: guide 002 carries both openai_api.model_name and model.name.
_SECTION_ORDER = ("proxy", "openai_api", "model", "mooncake", "test")
_TOP_LEVEL_KEYS = (*_SECTION_ORDER, "test_scenarios", "scenarios", "machines")

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
            "Fix the file; see the configuration table in README.md for the accepted keys."
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


def _mooncake_endpoints(reader: _Reader, section: Mapping[str, Any]) -> None:
    host = section.get("master_ip")
    if host is None:
        stray = sorted(_ENDPOINT_KEYS & set(section) - {"master_ip"})
        if stray:
            raise reader.fail(f"mooncake.{stray[0]}", "needs mooncake.master_ip beside it")
        return
    port = section.get("master_port", 50051)
    reader.put("master", f"{host}:{port}", "mooncake.master_ip/master_port")
    if "metadata_port" in section:
        reader.put("metadata_url", f"http://{host}:{section['metadata_port']}/metadata", "mooncake.metadata_port")
    if "metrics_port" in section:
        reader.put("metrics_url", f"http://{host}:{section['metrics_port']}", "mooncake.metrics_port")


def _scenarios(reader: _Reader, document: Mapping[str, Any]) -> None:
    definitions = reader.section(document, "test_scenarios")
    if definitions:
        source = f"YAML {reader.path}"
        reader.values["scenario_definitions"] = (
            {SCENARIO_ALIASES.get(k, k): parse_scenario(k, v, source) for k, v in definitions.items()},
            "YAML test_scenarios",
        )
        reader.put("scenarios", [SCENARIO_ALIASES.get(k, k) for k in definitions], "test_scenarios")
    names = document.get("scenarios")
    if names is not None:
        if not isinstance(names, list):
            raise reader.fail("scenarios", f"must be a list of scenario names, got {names!r}")
        reader.put("scenarios", [SCENARIO_ALIASES.get(str(n), str(n)) for n in names], "scenarios")


def _machines(reader: _Reader, document: Mapping[str, Any]) -> None:
    machines: dict[str, str] = {}
    for name, body in reader.section(document, "machines").items():
        ip = body.get("ip") if isinstance(body, Mapping) else None
        if not isinstance(ip, str):
            raise reader.fail(f"machines.{name}", "must be a mapping with an 'ip' string")
        machines[str(name)] = ip
    if machines:
        reader.values["machines"] = (machines, "YAML machines")


def load_yaml_settings(path: Path) -> dict[str, tuple[object, str]]:
    """Raw values with their sources (parsing happens later); UsageError on a key we do not know."""
    reader = _Reader(path)
    document = _read_document(path)
    for name in _SECTION_ORDER:
        section = reader.section(document, name)
        table = _SECTION_KEYS[name]
        for key, value in section.items():
            if key in table:
                reader.put(table[key], value, f"{name}.{key}")
            elif not (name == "mooncake" and key in _ENDPOINT_KEYS):
                accepted = [*table, *(_ENDPOINT_KEYS if name == "mooncake" else ())]
                raise _unknown_key(f"{path}: section {name!r}", key, accepted)
    _mooncake_endpoints(reader, reader.section(document, "mooncake"))
    _scenarios(reader, document)
    _machines(reader, document)
    settings = [name for name in SETTINGS_BY_NAME if name != "config"]
    for key, value in document.items():
        if key in _TOP_LEVEL_KEYS:
            continue
        if key not in settings:
            raise _unknown_key(f"{path}: top level", key, [*_TOP_LEVEL_KEYS, *settings])
        reader.put(key, value, key)
    return reader.values

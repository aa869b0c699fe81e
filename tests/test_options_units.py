"""Option precedence and the derived defaults, in-process against a fake ``pytest.Config``.

test_options.py drives the same code through pytester runs (some of them in a subprocess);
these call it directly, so a wrong source, default or message is caught without a pytest run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_mooncake.config import options
from pytest_mooncake.config.options import SETTINGS, SETTINGS_BY_NAME, MooncakeConfig, load_config
from pytest_mooncake.config.routes import add_options, given_routes
from pytest_mooncake.config.yamlconfig import load_yaml_settings

from .conftest import REPO


class FakeConfig:
    """What load_config reads of a ``pytest.Config``: ini keys, CLI options, warnings."""

    def __init__(self, ini: dict[str, object] | None = None, cli: dict[str, object] | None = None) -> None:
        self.ini, self.cli = ini or {}, cli or {}
        self.inipath = Path("/project/pytest.ini")
        self.warnings: list[tuple[str, int]] = []

    def getini(self, name: str) -> object:
        return self.ini.get(name, "")  # pytest's value for an unset ini key

    def getoption(self, name: str) -> object:
        return self.cli.get(name)

    def issue_config_time_warning(self, warning: Warning, stacklevel: int) -> None:
        self.warnings.append((str(warning), stacklevel))


def _load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None, **routes: Any) -> MooncakeConfig:
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return load_config(FakeConfig(**routes))  # type: ignore[arg-type]


def test_precedence_cli_env_ini_default(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _load(monkeypatch, env={"MOONCAKE_ROUNDS": "4", "MOONCAKE_MAX_TOKENS": "16", "MOONCAKE_MODEL": ""},
                   ini={"mooncake_rounds": "3", "mooncake_max_tokens": "8", "mooncake_concurrency": "6"},
                   cli={"mooncake_rounds": "5"})
    assert (config.rounds, config.max_tokens, config.concurrency, config.model) == (5, 16, 6, None)
    assert config.sources["rounds"] == "command line --mooncake-rounds"
    assert config.sources["max_tokens"] == "environment MOONCAKE_MAX_TOKENS"
    assert config.sources["concurrency"] == "ini mooncake_concurrency in /project/pytest.ini"
    assert config.sources["model"] == "default", "an empty environment variable is unset"


def test_yaml_is_below_every_other_route(monkeypatch: pytest.MonkeyPatch) -> None:
    yaml = REPO / "fixtures" / "configs" / "test_config_simple.yaml"
    config = _load(monkeypatch, cli={"mooncake_config": str(yaml), "mooncake_max_tokens": "9"})
    assert (config.max_tokens, config.model, config.openai_base_url) == (9, "Qwen/Qwen2.5-72B-Instruct", "http://192.0.2.20:8000/v1")
    assert config.sources["model"] == f"YAML {yaml} key model.name"
    assert config.sources["max_tokens"] == "command line --mooncake-max-tokens"


def test_an_unknown_yaml_key_stops_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A typo (``mooncak:``) once turned an attach run into a spawn run: it is an error, not a warning."""
    yaml = tmp_path / "c.yaml"
    yaml.write_text("model:\n  max_tokens: 8\n  colour: red\nshape: round\n")
    fake = FakeConfig(cli={"mooncake_config": str(yaml)})
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    with pytest.raises(pytest.UsageError) as info:
        load_config(fake)  # type: ignore[arg-type]
    assert str(info.value) == f"{yaml}: section 'model': unknown key 'colour'; accepted: max_tokens, name, temperature"
    assert fake.warnings == []


def test_a_bad_value_names_its_source_and_every_route(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pytest.UsageError) as info:
        _load(monkeypatch, cli={"mooncake_rounds": "many"})
    assert str(info.value).startswith("mooncake_rounds = 'many' (from command line --mooncake-rounds): ")
    assert str(info.value).endswith(".\nSet it with --mooncake-rounds, the ini key mooncake_rounds, "
                                    "or the environment variable MOONCAKE_ROUNDS.")


def _finish(**changes: object) -> MooncakeConfig:
    given = {name: SETTINGS_BY_NAME[name].parse(value) for name, value in changes.items()}
    return options._finish(given, dict.fromkeys(given, "test"), {})


def test_spawn_defaults() -> None:
    config = _finish()
    assert (config.store_nodes, config.lease_ttl, config.client_ttl, config.metadata_url, config.metrics_url) == (2, 1.0, 5.0, None, None)
    assert _finish(store_nodes=1, lease_ttl=3, client_ttl=4).store_nodes == 1
    assert (_finish(lease_ttl=3, client_ttl=4).lease_ttl, _finish(lease_ttl=3, client_ttl=4).client_ttl) == (3.0, 4.0)


def test_attach_defaults_follow_the_master() -> None:
    config = _finish(master="10.0.0.5:50051")
    assert (config.metadata_url, config.metrics_url, config.store_nodes, config.lease_ttl, config.client_ttl) == (
        "http://10.0.0.5:8080/metadata", "http://10.0.0.5:9003", 0, 10.0, 10.0)
    given = _finish(master="10.0.0.5:50051", metadata_url="http://m:1/metadata", store_nodes=2, lease_ttl=2, client_ttl=3)
    assert (given.metadata_url, given.store_nodes, given.lease_ttl, given.client_ttl) == ("http://m:1/metadata", 2, 2.0, 3.0)


def test_extras_reach_the_config() -> None:
    config = options._finish({}, {}, {"scenario_definitions": {"rag": {"num_requests": 4}}, "machines": {"a": "10.0.0.1"}})
    assert dict(config.scenario_definitions) == {"rag": {"num_requests": 4}} and dict(config.machines) == {"a": "10.0.0.1"}
    assert dict(_finish().scenario_definitions) == {} and dict(_finish().machines) == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"compare_fail": "ttft_p90:10%"},
         "mooncake_compare_fail (from test) needs a baseline to compare with. Fix: also give --mooncake-compare=NAME."),
        *(({name: value}, f"mooncake_{name} (from test) only applies to an attached cluster. Fix: also give "
           "--mooncake-master=HOST:PORT, or drop it to spawn a local cluster.")
          for name, value in (("metrics_url", "http://m:9003"), ("metadata_url", "http://m:8080/metadata"),
                              ("local_hostname", "10.0.0.7"))),
        ({"store_nodes": 0},
         "mooncake_store_nodes = 0 (from test): a spawned cluster needs at least 1 store node to hold data."),
        ({"reader_url": "http://r:8000/v1", "openai_base_url": "http://w:8000/v1"},  # not a cross-instance topology
         "mooncake_reader_url (from test) is the second instance of an attached cross-instance topology. Fix: also "
         "give --mooncake-topology=cross-instance and --mooncake-openai-base-url=WRITER_URL, or drop it."),
        ({"reader_url": "http://r:8000/v1", "topology": "cross-instance"},  # a spawned writer, not an attached one
         "mooncake_reader_url (from test) is the second instance of an attached cross-instance topology. Fix: also "
         "give --mooncake-topology=cross-instance and --mooncake-openai-base-url=WRITER_URL, or drop it."),
        ({"topology": "cross-instance", "openai_base_url": "http://w:8000/v1"},
         "mooncake_topology = 'cross-instance' (from test) against an attached endpoint needs the instance that "
         "serves the hit rounds. Fix: give --mooncake-reader-url=http://HOST:PORT/v1."),
        ({"ha_masters": 1},
         "mooncake_ha_masters = 1 (from test): high availability needs at least 2 masters (0 spawns one plain master)."),
        ({"local_buffer_size": str(16 * 2**20 - 1)},
         "mooncake_local_buffer_size = 16777215 B (16 MiB) (from test): expected a size of at least 16MiB, e.g. 32MiB: "
         "the store suites put objects of up to 16 MiB (one 128-token KV block of Llama-3.1-8B) through the session's "
         "store client, and a put larger than its buffer fails."),
        ({"multi_host": "yes", "netns": "off"},
         "mooncake_multi_host (from test) puts every spawned process in a network namespace of its own, but "
         "mooncake_netns = 'off' (from test) asks for none. Fix: drop one of the two (--mooncake-netns=auto or on "
         "works with --mooncake-multi-host)."),
        ({"scenarios": "high_reus,cold_start,nosuch"},
         "mooncake_scenarios = 'high_reus,cold_start,nosuch' (from test): unknown scenario 'high_reus' (did you mean "
         f"'high_reuse'?), 'nosuch'; known: {', '.join(options.SCENARIOS)}"),
    ],
)
def test_inconsistent_settings_say_how_to_fix_them(changes: dict[str, object], message: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        _finish(**changes)
    assert str(info.value) == message


def test_a_negative_ha_master_count_is_refused_where_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pytest.UsageError) as info:
        _load(monkeypatch, cli={"mooncake_ha_masters": "-1"})
    assert str(info.value) == ("mooncake_ha_masters = '-1' (from command line --mooncake-ha-masters): expected a whole "
                               "number >= 0.\nSet it with --mooncake-ha-masters, the ini key mooncake_ha_masters, or the "
                               "environment variable MOONCAKE_HA_MASTERS.")


def test_consistent_topology_and_ha_settings_are_fine() -> None:
    attached = _finish(topology="cross-instance", openai_base_url="http://w:8000/v1", reader_url="http://r:8000/v1")
    assert (attached.topology, attached.openai_base_url, attached.reader_url) == (
        "cross-instance", "http://w:8000/v1", "http://r:8000/v1")
    assert _finish(topology="cross-instance").reader_url is None  # spawned: the plugin starts both instances
    assert (_finish(ha_masters=0).ha_masters, _finish(ha_masters=2).ha_masters) == (0, 2)


def test_limits_of_the_door_checks_are_fine() -> None:
    assert _finish(local_buffer_size=str(16 * 2**20)).local_buffer_size == 16 * 2**20
    assert _finish(multi_host="yes", netns="on").multi_host and _finish(netns="off").netns == "off"
    assert _finish(master="10.0.0.5:50051", multi_host="yes", netns="off").netns == "off"  # attached: nothing spawned


def test_user_scenarios_are_known_names() -> None:
    given = {"scenarios": SETTINGS_BY_NAME["scenarios"].parse("rag")}
    config = options._finish(given, {"scenarios": "test"}, {"scenario_definitions": {"rag": {"num_requests": 4}}})
    assert config.scenarios == ("rag",)
    with pytest.raises(pytest.UsageError) as info:
        options._finish(given, {"scenarios": "test"}, {})
    assert str(info.value).startswith("mooncake_scenarios = 'rag' (from test): unknown scenario 'rag'; known: ")
    assert str(info.value).endswith("known: " + ", ".join(options.SCENARIOS))


@pytest.mark.parametrize(("override", "source"), [
    (["mooncake_rounds=4"], "command line -o mooncake_rounds"),
    ([" mooncake_rounds =4"], "command line -o mooncake_rounds"),
    (["mooncake_rounds_other=4", "x=mooncake_rounds"], "ini mooncake_rounds in /project/pytest.ini"),
    (None, "ini mooncake_rounds in /project/pytest.ini"),
])
def test_an_ini_value_names_the_route_it_came_from(override: list[str] | None, source: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOONCAKE_ROUNDS", raising=False)
    fake = FakeConfig(ini={"mooncake_rounds": "4"}, cli={"override_ini": override})
    assert given_routes(fake) == {"rounds": ("4", source)}  # type: ignore[arg-type]


def test_compare_fail_with_a_baseline_is_fine() -> None:
    assert dict(_finish(compare="main", compare_fail="ttft_p90:10%").compare_fail) == {"ttft_p90": 0.1}


def test_defaults_and_overrides() -> None:
    config = MooncakeConfig.from_defaults(model=None, rounds=3, report="md,html", compare="b", compare_fail="throughput:5%")
    assert (config.model, config.rounds, config.report, dict(config.compare_fail)) == (None, 3, ("md", "html"), {"throughput": 0.05})
    assert set(MooncakeConfig.from_defaults().sources.values()) == {"default"}
    with pytest.raises(TypeError) as info:
        config.with_overrides(colour="red")
    assert str(info.value) == f"unknown pytest-mooncake setting 'colour'; valid: {', '.join(sorted(SETTINGS_BY_NAME))}"


def test_redacted_is_json_friendly_and_hides_secrets() -> None:
    config = MooncakeConfig.from_defaults(master="h:1", api_key="sk-1", scenarios="a,b", report="md",
                                          compare="b", compare_fail="ttft_p90:10%", results_dir="/r")
    out = config.redacted()
    assert (out["api_key"], out["master"], out["results_dir"], out["model"], out["rounds"]) == ("***", "h:1", "/r", None, 2)
    assert (out["compare_fail"], out["scenarios"], out["report"]) == ({"ttft_p90": 0.1}, ["a", "b"], ["md"])
    assert type(out["compare_fail"]) is dict, "a plain dict, so the results JSON can hold it"
    plain = MooncakeConfig.from_defaults().redacted()
    assert (plain["api_key"], plain["compare_fail"], plain["scenarios"], plain["report"]) == (None, None, [], [])


class RecordingParser:
    def __init__(self) -> None:
        self.groups: list[tuple[str, str]] = []
        self.options: list[tuple[tuple[object, ...], dict[str, object]]] = []
        self.inis: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def getgroup(self, name: str, description: str) -> RecordingParser:
        self.groups.append((name, description))
        return self

    def addoption(self, *args: object, **kwargs: object) -> None:
        self.options.append((args, kwargs))

    def addini(self, *args: object, **kwargs: object) -> None:
        self.inis.append((args, kwargs))


def test_every_setting_is_one_cli_option_and_one_ini_key() -> None:
    parser = RecordingParser()
    add_options(parser)  # type: ignore[arg-type]
    assert parser.groups == [("mooncake", "Mooncake services and KV-cache acceptance suites")]
    speed = SETTINGS_BY_NAME["trace_speed"]
    assert (("--mooncake-trace-speed",), {"dest": "mooncake_trace_speed", "default": None, "metavar": "X",
                                          "help": speed.help + " (default: 1.0)"}) in parser.options
    percent = next(s for s in SETTINGS if "%" in s.help)
    assert ((percent.flag,), {"dest": percent.ini, "default": None, "metavar": percent.metavar,
                              "help": percent.cli_help.replace("%", "%%")}) in parser.options, "argparse %-formats help"
    switch = SETTINGS_BY_NAME["multi_host"]  # yes/no in ini, environment and YAML; a bare switch on the command line
    assert (("--mooncake-multi-host",), {"dest": "mooncake_multi_host", "default": None, "action": "store_const",
                                         "const": True, "help": switch.help + " (default: no)"}) in parser.options
    assert parser.inis == [((s.ini,), {"help": s.cli_help, "default": None}) for s in SETTINGS]
    assert parser.options[-1] == (("--mooncake-doctor",), {
        "action": "store_true", "default": False,
        "help": "Check every configured endpoint (one line each, with the fix) and exit"})
    assert len(parser.options) == len(SETTINGS) + 1


@pytest.mark.parametrize(
    ("mooncake", "values"),
    [
        ("master_ip: 10.0.0.5", {"master": ("10.0.0.5:50051", "mooncake.master_ip + mooncake.master_port")}),
        ("master_ip: h\n  metrics_port: 9", {"master": ("h:50051", "mooncake.master_ip + mooncake.master_port"),
                                            "metrics_url": ("http://h:9", "mooncake.master_ip + mooncake.metrics_port")}),
    ],
)
def test_yaml_values_joined_from_several_keys(tmp_path: Path, mooncake: str, values: dict[str, tuple[str, str]]) -> None:
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"mooncake:\n  {mooncake}\n")
    assert load_yaml_settings(yaml, SETTINGS) == {name: (value, f"YAML {yaml} key {key}") for name, (value, key) in values.items()}


@pytest.mark.parametrize("stray", ["master_port: 1", "metadata_port: 8080"])
def test_a_joined_key_without_its_partner_stops_the_run(tmp_path: Path, stray: str) -> None:
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"mooncake:\n  {stray}\n")
    with pytest.raises(pytest.UsageError) as info:
        load_yaml_settings(yaml, SETTINGS)
    key = stray.split(":")[0]
    assert str(info.value).startswith(f"{yaml}: key 'mooncake.{key}' needs mooncake.master_ip beside it.\n")


def test_a_top_level_name_beats_the_guides_keys_and_a_section_keeps_its_name(tmp_path: Path) -> None:
    yaml = tmp_path / "c.yaml"
    yaml.write_text("max_tokens: 5\nmodel:\n  max_tokens: 6\n  name: m\nscenarios: multi_turn_conversation,rag\n")
    values = load_yaml_settings(yaml, SETTINGS)
    assert (values["max_tokens"][0], values["model"][0]) == (5, "m")
    assert SETTINGS_BY_NAME["scenarios"].parse(values["scenarios"][0]) == ("multi_turn", "rag")


def test_defaults_are_declared_in_the_forms_users_write() -> None:
    lease = SETTINGS_BY_NAME["lease_ttl"]
    assert (lease.default_text, lease.fallback(None), lease.fallback("h")) == ("1s spawned / 10s attached", 1.0, 10.0)
    metadata = SETTINGS_BY_NAME["metadata_url"]
    assert metadata.default_text == "http://MASTER_HOST:8080/metadata attached"
    assert (metadata.fallback(None), metadata.fallback("h")) == (None, "http://h:8080/metadata")
    assert SETTINGS_BY_NAME["segment_size"].fallback(None) == 64 * 2**20

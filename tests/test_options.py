"""Every setting through CLI, ini, environment and YAML; precedence; every bad input."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mooncake.config.options import SETTINGS, SETTINGS_BY_NAME, MooncakeConfig
from pytest_mooncake.config.parsing import HostPort, parse_duration, parse_endpoint, parse_size
from pytest_mooncake.config.routes import OPTIONS

REPO = Path(__file__).resolve().parent.parent


def test_settings_table_and_config_type_agree() -> None:
    fields = set(MooncakeConfig.__dataclass_fields__)
    assert {setting.name for setting in SETTINGS} <= fields
    assert fields - {s.name for s in SETTINGS} == {"scenario_definitions", "machines", "sources"}


def test_every_setting_has_flag_ini_and_env() -> None:
    for setting in SETTINGS:
        public = setting.alias or setting.name
        assert setting.flag == "--mooncake-" + public.replace("_", "-")
        assert setting.ini == "mooncake_" + public
        assert setting.env == "MOONCAKE_" + public.upper()


def test_the_yaml_path_is_a_field_named_for_what_it_holds() -> None:
    config_file = SETTINGS_BY_NAME["config_file"]
    assert (config_file.flag, config_file.ini, config_file.env) == ("--mooncake-config", "mooncake_config", "MOONCAKE_CONFIG")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("67108864", 64 * 2**20), ("64MiB", 64 * 2**20), ("64MB", 64 * 2**20), ("1 GiB", 2**30), ("4gb", 4 * 2**30), (512, 512)],
)
def test_sizes_use_mooncake_binary_units(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("500ms", 0.5), ("30", 30.0), ("2m", 120.0), (5, 5.0)])
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["nonsense", "host:", ":50051", "host:0", "host:70000", "host:port"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_endpoint(text)


def test_endpoint_parses() -> None:
    assert parse_endpoint("10.0.0.5:50051") == HostPort("10.0.0.5", 50051)


def test_defaults_spawn_a_two_node_cluster(print_config_test: pytest.Pytester) -> None:
    result = print_config_test.runpytest("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*CFG master=None", "CFG protocol='tcp'", "CFG store_nodes=2", "CFG lease_ttl=1.0"])


def test_cli_option(print_config_test: pytest.Pytester) -> None:
    result = print_config_test.runpytest("-s", "--mooncake-store-nodes=3", "--mooncake-segment-size=16MiB")
    result.stdout.fnmatch_lines(["CFG store_nodes=3", f"CFG segment_size={16 * 2**20}", "CFG sources.store_nodes=command line --mooncake-store-nodes"])


def test_ini_option(print_config_test: pytest.Pytester) -> None:
    print_config_test.makeini("[pytest]\nmooncake_store_nodes = 4\n")
    result = print_config_test.runpytest("-s")
    result.stdout.fnmatch_lines(["CFG store_nodes=4", "CFG sources.store_nodes=ini mooncake_store_nodes in *"])


def test_env_option(print_config_test: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONCAKE_STORE_NODES", "5")
    result = print_config_test.runpytest("-s")
    result.stdout.fnmatch_lines(["CFG store_nodes=5", "CFG sources.store_nodes=environment MOONCAKE_STORE_NODES"])


def test_precedence_cli_env_ini_yaml(print_config_test: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml_file = print_config_test.makefile(".yaml", cfg="store_nodes: 6\nrounds: 7\nmax_tokens: 9\nrequests_per_scenario: 11\n")
    print_config_test.makeini(
        f"[pytest]\nmooncake_config = {yaml_file}\nmooncake_store_nodes = 4\nmooncake_rounds = 3\nmooncake_max_tokens = 8\n"
    )
    monkeypatch.setenv("MOONCAKE_STORE_NODES", "5")
    monkeypatch.setenv("MOONCAKE_ROUNDS", "2")
    result = print_config_test.runpytest("-s", "--mooncake-store-nodes=3")
    # CLI beats env, env beats ini, ini beats YAML, YAML beats the default.
    result.stdout.fnmatch_lines(
        ["CFG store_nodes=3", "CFG max_tokens=8", "CFG rounds=2", "CFG requests_per_scenario=11"], consecutive=False
    )


def test_factory_argument_beats_everything(print_config_test: pytest.Pytester) -> None:
    print_config_test.makepyfile(
        test_factory="""
        from pytest_mooncake.harness.session import get_config
        def test_override(request):
            cfg = get_config(request.config).with_overrides(store_nodes=9, segment_size="32MiB")
            assert (cfg.store_nodes, cfg.segment_size) == (9, 32 * 2**20)
        """
    )
    print_config_test.runpytest("--mooncake-store-nodes=3", "test_factory.py").assert_outcomes(passed=1)


def test_guide_001_yaml_sets_up_attach_mode(print_config_test: pytest.Pytester) -> None:
    # --collect-only: the guide's documentation addresses must never be contacted from here.
    result = print_config_test.runpytest("--collect-only", f"--mooncake-config={REPO / 'fixtures/configs/test_config.yaml'}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "mooncake: attach master=192.0.2.10:50052 metadata=http://192.0.2.10:8080/metadata "
            "metrics=http://192.0.2.10:9004 | protocol=rdma *| openai=http://192.0.2.10:9000/v1 | topology=prefix-cache (no KV connector)",
            "mooncake config file: *test_config.yaml",
        ]
    )


def test_guide_yaml_values_are_mapped(pytester: pytest.Pytester) -> None:
    from pytest_mooncake.config.yamlconfig import load_yaml_settings

    values = {k: v for k, (v, _) in load_yaml_settings(REPO / "fixtures/configs/test_config_simple.yaml", SETTINGS).items()}
    assert values["master"] == "192.0.2.21:50052"
    assert values["metadata_url"] == "http://192.0.2.21:8080/metadata"
    assert values["metrics_url"] == "http://192.0.2.21:9004"
    assert values["openai_base_url"] == "http://192.0.2.20:8000/v1"
    assert values["model"] == "Qwen/Qwen2.5-72B-Instruct"
    # The guides' multi_turn_conversation is our multi_turn, wherever it is named.
    assert SETTINGS_BY_NAME["scenarios"].parse(values["scenarios"]) == ("long_context_high_reuse", "multi_turn", "cold_start")
    assert (values["rounds"], values["requests_per_scenario"], values["concurrency"]) == (2, 30, None)
    guide1 = {k: v for k, (v, _) in load_yaml_settings(REPO / "fixtures/configs/test_config.yaml", SETTINGS).items()}
    assert guide1["openai_base_url"] == "http://192.0.2.10:9000/v1"
    assert guide1["rdma_devices"] == "mlx5_0"
    assert guide1["segment_size"] == 32212254720
    assert guide1["machines"] == {"machine_a": "192.0.2.10", "machine_b": "192.0.2.11"}
    assert guide1["scenario_definitions"]["high_reuse"]["num_requests"] == 50


def _usage_error(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    started = time.monotonic()
    result = pytester.runpytest_subprocess(*args, timeout=60)
    assert time.monotonic() - started < 15, "a usage error must end the run within 15 s"
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    return result


def test_nonsense_master_on_cli(print_config_test: pytest.Pytester) -> None:
    result = _usage_error(print_config_test, "--mooncake-master=nonsense")
    result.stderr.fnmatch_lines(
        ["*mooncake_master = 'nonsense' (from command line --mooncake-master): expected HOST:PORT*", "*Set it with --mooncake-master*"]
    )


def test_bad_ini_value(print_config_test: pytest.Pytester) -> None:
    print_config_test.makeini("[pytest]\nmooncake_segment_size = lots\n")
    result = _usage_error(print_config_test)
    result.stderr.fnmatch_lines(["*mooncake_segment_size = 'lots' (from ini mooncake_segment_size in *): expected a byte size*"])


def test_bad_env_value(print_config_test: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONCAKE_PROTOCOL", "udp")
    result = _usage_error(print_config_test)
    result.stderr.fnmatch_lines(["*mooncake_protocol = 'udp' (from environment MOONCAKE_PROTOCOL): expected one of: tcp, rdma*"])


def test_bad_yaml_value(print_config_test: pytest.Pytester) -> None:
    cfg = print_config_test.makefile(".yaml", cfg="test:\n  rounds: zero\n")
    result = _usage_error(print_config_test, f"--mooncake-config={cfg}")
    result.stderr.fnmatch_lines(["*mooncake_rounds = 'zero' (from YAML *cfg.yaml key test.rounds): expected a whole number >= 2 (round 1 is cold*"])


def test_malformed_yaml(print_config_test: pytest.Pytester) -> None:
    cfg = print_config_test.makefile(".yaml", cfg="mooncake:\n  protocol: tcp\n   master_ip: [oops\n")
    result = _usage_error(print_config_test, f"--mooncake-config={cfg}")
    result.stderr.fnmatch_lines(["*cfg.yaml is not valid YAML at line *, column *", "*Fix the syntax*"])


def test_yaml_section_of_wrong_type(print_config_test: pytest.Pytester) -> None:
    cfg = print_config_test.makefile(".yaml", cfg="mooncake: tcp\n")
    result = _usage_error(print_config_test, f"--mooncake-config={cfg}")
    result.stderr.fnmatch_lines(["*key 'mooncake' must be a mapping, got str 'tcp'*"])


def test_missing_yaml_file(print_config_test: pytest.Pytester) -> None:
    result = _usage_error(print_config_test, "--mooncake-config=nowhere.yaml")
    result.stderr.fnmatch_lines(["*Config file nowhere.yaml does not exist*"])


def test_unknown_yaml_section_key_is_a_usage_error(print_config_test: pytest.Pytester) -> None:
    cfg = print_config_test.makefile(".yaml", cfg="mooncake:\n  protocl: tcp\n")
    result = _usage_error(print_config_test, f"--mooncake-config={cfg}")
    result.stderr.fnmatch_lines(["*section 'mooncake': unknown key 'protocl' (did you mean 'protocol'?); accepted: *"])


def test_attach_only_setting_without_master(print_config_test: pytest.Pytester) -> None:
    result = _usage_error(print_config_test, "--mooncake-metrics-url=http://127.0.0.1:9003")
    result.stderr.fnmatch_lines(["*mooncake_metrics_url (from command line --mooncake-metrics-url) only applies to an attached cluster*"])


def test_zero_store_nodes_when_spawning(print_config_test: pytest.Pytester) -> None:
    result = _usage_error(print_config_test, "--mooncake-store-nodes=0")
    result.stderr.fnmatch_lines(["*a spawned cluster needs at least 1 store node*"])


def test_unknown_factory_setting_lists_valid_ones() -> None:
    config = MooncakeConfig.from_defaults()
    with pytest.raises(TypeError, match="unknown pytest-mooncake setting 'segments'; valid: "):
        config.with_overrides(segments=3)
    with pytest.raises(pytest.UsageError, match="from a fixture-factory argument"):
        config.with_overrides(segment_size="huge")
    assert "api_key" in SETTINGS_BY_NAME


def test_secrets_are_redacted() -> None:
    config = MooncakeConfig.from_defaults(api_key="sk-123")
    assert config.redacted()["api_key"] == "***"


def test_help_lists_the_mooncake_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*Mooncake services and KV-cache acceptance suites*", "*--mooncake-master=HOST:PORT*", "*--mooncake-doctor*"])


def _settings_table_script() -> Any:
    spec = importlib.util.spec_from_file_location("settings_table", REPO / "scripts" / "settings_table.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_docs_settings_table_is_generated_from_the_settings() -> None:
    script = _settings_table_script()
    assert script.PAGE == REPO / "docs" / "operators" / "configuration.md"
    page = script.PAGE.read_text("utf-8")
    assert script.BEGIN in page and script.END in page
    assert script.with_table(page) == page, f"the docs' settings table is stale: run {script.REGENERATE}"


def test_the_routes_registered_at_load_are_generated_from_the_settings() -> None:
    # The imported data, not the file's text: the mutation check runs this on a rewritten module.
    generated = tuple((s.name, s.flag, s.ini, s.env, s.metavar, s.switch, s.cli_help) for s in SETTINGS)
    assert OPTIONS == generated, f"config/routes.py's OPTIONS are stale: run {_settings_table_script().REGENERATE}"


def test_readme_starts_with_the_two_commands() -> None:
    lines = (REPO / "README.md").read_text("utf-8").splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert block[0].startswith("bash scripts/install.sh && .venv/bin/pytest suites/")
    assert block[1].startswith(".venv/bin/pytest tests/")

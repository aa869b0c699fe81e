"""Every setting, declared once, read once into a frozen, typed config.

Each row of ``SETTINGS`` yields a CLI option ``--mooncake-<name>``, an ini key
``mooncake_<name>`` and an environment variable ``MOONCAKE_<NAME>``; the guides'
YAML keys map onto the same rows (see ``yamlconfig``). Precedence:
fixture-factory argument > CLI > environment > ini > YAML file > default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from . import parsing as p
from .parsing import Endpoint

GROUP = "mooncake"
# The serving topologies (pytest_mooncake.vllm.topology describes each).
TOPOLOGY_NAMES = ("prefix-cache", "baseline", "mooncake-store", "cross-instance", "pd-store", "pd", "lmcache")


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    parse: Callable[[object], Any]
    default: Any = None
    metavar: str = "VALUE"
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--mooncake-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "mooncake_" + self.name

    @property
    def env(self) -> str:
        return "MOONCAKE_" + self.name.upper()


def _path(value: object) -> Path:
    return Path(str(value)).expanduser()


def _rules(value: object) -> Mapping[str, float]:
    from .baseline import parse_rules

    return MappingProxyType(parse_rules(str(value)))


def _formats(value: object) -> tuple[str, ...]:
    from .report.cli import parse_formats

    return parse_formats(str(value))


SETTINGS: tuple[Setting, ...] = (
    Setting("config", "YAML test config (the guides' test_config.yaml format)", _path, None, "FILE"),
    Setting("master", "Attach to the Mooncake master at HOST:PORT; spawn a local cluster when unset", p.parse_endpoint, None, "HOST:PORT"),
    Setting("metadata_url", "Transfer Engine metadata server of an attached cluster (default http://MASTER_HOST:8080/metadata)", p.parse_metadata_url, None, "URL"),
    Setting("metrics_url", "Admin/metrics HTTP base URL of an attached master (default http://MASTER_HOST:9003)", p.parse_url, None, "URL"),
    Setting("protocol", "Transfer protocol of the store clients: tcp or rdma", p.choice("tcp", "rdma"), "tcp", "tcp|rdma"),
    Setting("rdma_devices", "RDMA devices for the store clients, e.g. mlx5_0,mlx5_1 (empty: auto)", p.parse_text, "", "DEVICES"),
    Setting("local_hostname", "Address our store clients advertise to an attached cluster (default: the interface routing to the master)", p.parse_text, None, "HOST"),
    Setting("store_nodes", "Store-node processes to spawn (default 2 when spawning a cluster, 0 when attached)", p.parse_int, None, "N"),
    Setting("segment_size", "Memory each spawned store node contributes to the pool (binary units, at least 16MiB)", p.parse_segment_size, 64 * 2**20, "SIZE"),
    Setting("local_buffer_size", "Local transfer buffer of each store client; caps the object size of put/get", p.parse_size, 32 * 2**20, "SIZE"),
    Setting("lease_ttl", "Object lease after a read: passed to a spawned master, assumed for an attached one (default 1s spawned, 10s attached)", p.parse_positive_duration, None, "DURATION"),
    Setting("client_ttl", "Seconds until the master expires a silent client: passed to a spawned master, assumed for an attached one (default 5s spawned, 10s attached)", p.parse_positive_duration, None, "DURATION"),
    Setting("netns", "Isolate spawned Mooncake processes in a private network namespace: auto, on, off", p.choice("auto", "on", "off"), "auto", "auto|on|off"),
    Setting("multi_host", "Give the spawned master and every store node a network namespace of its own, joined by a bridge over veth pairs, so a fault can hit one node's link (needs root; default: all on one namespace's loopback)", p.parse_bool, False, "yes|no"),
    Setting("ha_masters", "Spawn N masters with high availability through a spawned etcd (etcd on $PATH: Debian's etcd-server); clients find the leader through etcd:// (0: one plain master)", p.parse_int, 0, "N"),
    Setting("soak_ops", "Store operations of the soak test (suites/store/test_soak.py); 100000 or more for the full run", p.parse_positive_int, 12000, "N"),
    Setting("allow_eviction", "Let tests fill an ATTACHED cluster past its capacity. Mooncake's eviction is global: this EVICTS OTHER TENANTS' KV (spawned clusters always allow it)", p.parse_bool, False, "yes|no"),
    Setting("master_bin", "Path of the mooncake_master binary to spawn (default: the one in the Mooncake wheel)", _path, None, "PATH"),
    Setting("bench_bin", "Path of the transfer_engine_bench binary (default: the one in the Mooncake wheel)", _path, None, "PATH"),
    Setting("openai_base_url", "OpenAI-compatible endpoint to test, e.g. http://10.0.0.5:8000/v1 (default: spawn vLLM when installed)", p.parse_openai_url, None, "URL"),
    Setting("baseline_url", "OpenAI-compatible endpoint without KV reuse for A/B comparisons (default: spawn vLLM with prefix caching off)", p.parse_openai_url, None, "URL"),
    Setting("topology", "Serving topology the serving suites measure: prefix-cache, baseline, mooncake-store, cross-instance, pd-store, pd or lmcache (README: Topologies)", p.choice(*TOPOLOGY_NAMES), "prefix-cache", "NAME"),
    Setting("reader_url", "The attached cross-instance topology's second instance, which serves the hit rounds (--mooncake-openai-base-url is the writer)", p.parse_openai_url, None, "URL"),
    Setting("kv_pool_size", "Memory of each of the 2 store nodes that hold vLLM's KV in a spawned Mooncake topology (binary units, at least 16MiB)", p.parse_segment_size, 2**30, "SIZE"),
    Setting("vllm_python", "Python interpreter that has vLLM, used to spawn servers (default: this one)", _path, None, "PATH"),
    Setting("api_key", "API key for the OpenAI-compatible endpoint", p.parse_text, None, "KEY", secret=True),
    Setting("model", "Model name served by the endpoint (default: the first of /v1/models)", p.parse_text, None, "NAME"),
    Setting("tokenizer", "The served model's tokenizer (tokenizer.json or a directory holding it) for prompts exact in tokens, when the endpoint has no /tokenize (e.g. a PD proxy)", _path, None, "PATH"),
    Setting("max_tokens", "Completion tokens per request", p.parse_positive_int, 64, "N"),
    Setting("temperature", "Sampling temperature (0 makes cache-hit output comparable to cold output)", p.parse_float, 0.0, "T"),
    Setting("rounds", "Measurement rounds per scenario (round 1 cold, later rounds cache hits; at least 2)", p.parse_rounds, 2, "N"),
    Setting("requests_per_scenario", "Requests sent per scenario and round", p.parse_positive_int, 10, "N"),
    Setting("concurrency", "Requests in flight at once (none: no limit)", p.parse_optional_positive_int, 1, "N"),
    Setting("scenarios", "Comma-separated scenarios to run (default: all collected)", p.parse_names, (), "NAMES"),
    Setting("trace", "Mooncake trace (JSONL) to replay (default: the bundled conversation trace)", _path, None, "FILE"),
    Setting("trace_requests", "Replay the first N requests of the trace", p.parse_positive_int, 200, "N"),
    Setting("trace_scale", "Shrink every 512-token trace block by this factor to fit a small server", p.parse_positive_int, 8, "N"),
    Setting("trace_speed", "Replay the trace's timestamps this many times faster", p.parse_float, 1.0, "X"),
    Setting("startup_timeout", "Seconds a spawned service may take to become ready", p.parse_positive_duration, 180.0, "SECONDS"),
    Setting("request_timeout", "Seconds one request or store operation may take", p.parse_positive_duration, 300.0, "SECONDS"),
    Setting("results_dir", "Directory for result JSON, reports and service logs", _path, Path(".mooncake-results"), "DIR"),
    Setting("save", "Save this run's results as the named baseline", p.parse_text, None, "NAME"),
    Setting("compare", "Compare this run against the named baseline", p.parse_text, None, "NAME"),
    Setting("compare_fail", "Fail the session on a regression against --mooncake-compare, e.g. ttft_p90:10%,throughput:5%", _rules, None, "EXPR"),
    Setting("profile", "Qualification profile (ci/profiles/NAME.yaml, or a YAML path) whose thresholds fill in those a test's mooncake_perf marker leaves unset", p.parse_text, None, "NAME"),
    Setting("report", "Evaluation report formats to write into the results directory at session end: md, html or md,html (default: none)", _formats, (), "FORMATS"),
    Setting("server_cost", "Monthly cost of one serving server, for the evaluation report's cost model", p.parse_float, None, "AMOUNT"),
    Setting("capacity_ttft_slo", "TTFT p90 limit of the capacity search: a duration (500ms) or a multiple of the baseline's unloaded TTFT (4x)", p.parse_latency_limit, p.LatencyLimit(factor=4.0), "LIMIT"),
    Setting("capacity_tpot_slo", "TPOT p90 limit of the capacity search, in the same forms (default: none)", p.parse_latency_limit, None, "LIMIT"),
    Setting("capacity_step_requests", "Poisson arrivals per rate step of the capacity search; the first fifth warm the queue and are not counted", lambda v: p.parse_int(v, minimum=10), 30, "N"),
    Setting("capacity_step_duration", "Shortest rate step of the capacity search: at least this long of arrivals, so an overloaded server's queue can build", p.parse_positive_duration, 10.0, "DURATION"),
    Setting("capacity_deadline", "Time limit of the whole capacity search, all topologies together, once their servers are up", p.parse_positive_duration, 180.0, "DURATION"),
    Setting("capacity_scenario", "Workload mix of the capacity search: a scenario name (default: 8 shared 2,048-token documents, each request a new 64-token question)", p.parse_text, None, "NAME"),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class MooncakeConfig:
    """The effective settings of a session (or of one factory, after overrides)."""

    config: Path | None
    master: Endpoint | None
    metadata_url: str | None
    metrics_url: str | None
    protocol: str
    rdma_devices: str
    local_hostname: str | None
    store_nodes: int
    segment_size: int
    local_buffer_size: int
    lease_ttl: float
    client_ttl: float
    netns: str
    multi_host: bool
    ha_masters: int
    soak_ops: int
    allow_eviction: bool
    master_bin: Path | None
    bench_bin: Path | None
    openai_base_url: str | None
    baseline_url: str | None
    topology: str
    reader_url: str | None
    kv_pool_size: int
    vllm_python: Path | None
    api_key: str | None
    model: str | None
    tokenizer: Path | None
    max_tokens: int
    temperature: float
    rounds: int
    requests_per_scenario: int
    concurrency: int | None
    scenarios: tuple[str, ...]
    trace: Path | None
    trace_requests: int
    trace_scale: int
    trace_speed: float
    startup_timeout: float
    request_timeout: float
    results_dir: Path
    save: str | None
    compare: str | None
    compare_fail: Mapping[str, float] | None
    profile: str | None
    report: tuple[str, ...]
    server_cost: float | None
    capacity_ttft_slo: p.LatencyLimit
    capacity_tpot_slo: p.LatencyLimit | None
    capacity_step_requests: int
    capacity_step_duration: float
    capacity_deadline: float
    capacity_scenario: str | None
    # From the guides' YAML only: scenario definitions and the machine list.
    scenario_definitions: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    machines: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_defaults(cls, **overrides: object) -> MooncakeConfig:
        """The defaults with ``overrides`` applied: configuration for use outside a pytest run."""
        values = {setting.name: setting.default for setting in SETTINGS}
        sources = {name: "default" for name in values}
        return _finish(values, sources, {}).with_overrides(**overrides)

    @property
    def attach(self) -> bool:
        return self.master is not None

    def with_overrides(self, **overrides: object) -> MooncakeConfig:
        """Apply fixture-factory arguments, parsed like every other route."""
        parsed: dict[str, Any] = {}
        for name, raw in overrides.items():
            if raw is None:
                continue
            setting = SETTINGS_BY_NAME.get(name)
            if setting is None:
                raise TypeError(
                    f"unknown pytest-mooncake setting {name!r}; "
                    f"valid: {', '.join(sorted(SETTINGS_BY_NAME))}"
                )
            parsed[name] = _parse(setting, raw, "a fixture-factory argument")
        return dataclasses.replace(self, **parsed)

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-friendly values, secrets replaced."""
        out: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret and value:
                value = "***"
            out[setting.name] = str(value) if isinstance(value, (Path, Endpoint, p.LatencyLimit)) else value
        out["compare_fail"] = dict(self.compare_fail) if self.compare_fail else None
        out["scenarios"] = list(self.scenarios)
        out["report"] = list(self.report)
        return out


def _parse(setting: Setting, raw: object, source: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise pytest.UsageError(
            f"{setting.ini} = {raw!r} (from {source}): {exc}.\n"
            f"Set it with {setting.flag}, the ini key {setting.ini}, "
            f"or the environment variable {setting.env}."
        ) from None


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "Mooncake services and KV-cache acceptance suites")
    for setting in SETTINGS:
        # argparse %-formats help strings.
        cli_help = setting.help.replace("%", "%%")
        if setting.parse is p.parse_bool:
            # A switch on the command line; ini, environment and YAML take yes/no.
            group.addoption(setting.flag, dest=setting.ini, default=None, action="store_const", const=True, help=cli_help)
        else:
            group.addoption(setting.flag, dest=setting.ini, default=None, metavar=setting.metavar, help=cli_help)
        parser.addini(setting.ini, help=setting.help, default=None)
    group.addoption(
        "--mooncake-doctor",
        action="store_true",
        default=False,
        help="Check every configured endpoint (one line each, with the fix) and exit",
    )


def _raw_values(config: pytest.Config) -> dict[str, tuple[object, str]]:
    """The winning raw value and its source for every setting that is set anywhere."""
    from .yamlconfig import load_yaml_settings

    found: dict[str, tuple[object, str]] = {}
    layers: list[Callable[[Setting], tuple[object, str] | None]] = [
        lambda s: _ini_value(config, s),
        lambda s: (os.environ[s.env], f"environment {s.env}") if os.environ.get(s.env) else None,
        lambda s: (value, f"command line {s.flag}")
        if (value := config.getoption(s.ini)) is not None
        else None,
    ]
    for layer in layers:
        for setting in SETTINGS:
            hit = layer(setting)
            if hit is not None:
                found[setting.name] = hit
    if "config" in found:
        raw, source = found["config"]
        path = _parse(SETTINGS_BY_NAME["config"], raw, source)
        found = {**load_yaml_settings(path), **found}
    return found


def _ini_value(config: pytest.Config, setting: Setting) -> tuple[object, str] | None:
    value = config.getini(setting.ini)
    if value in (None, "", []):
        return None
    return value, f"ini {setting.ini} in {config.inipath}"


def load_config(config: pytest.Config) -> MooncakeConfig:
    """Read, parse and cross-check every setting; raise UsageError on a bad one."""
    from .yamlconfig import EXTRA_KEYS

    raw = _raw_values(config)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in raw:
            value, source = raw[setting.name]
            values[setting.name] = _parse(setting, value, source)
            sources[setting.name] = source
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
    extras = {key: raw[key][0] for key in EXTRA_KEYS if key in raw}
    return _finish(values, sources, extras)


def _finish(values: dict[str, Any], sources: dict[str, str], extras: dict[str, Any]) -> MooncakeConfig:
    if values["compare_fail"] is not None and values["compare"] is None:
        raise pytest.UsageError(
            f"mooncake_compare_fail (from {sources['compare_fail']}) needs a baseline to compare with. "
            "Fix: also give --mooncake-compare=NAME."
        )
    if values["reader_url"] is not None and (values["topology"] != "cross-instance" or values["openai_base_url"] is None):
        raise pytest.UsageError(
            f"mooncake_reader_url (from {sources['reader_url']}) is the second instance of an attached cross-instance "
            "topology. Fix: also give --mooncake-topology=cross-instance and --mooncake-openai-base-url=WRITER_URL, or drop it."
        )
    if values["topology"] == "cross-instance" and values["openai_base_url"] is not None and values["reader_url"] is None:
        raise pytest.UsageError(
            f"mooncake_topology = 'cross-instance' (from {sources['topology']}) against an attached endpoint needs the "
            "instance that serves the hit rounds. Fix: give --mooncake-reader-url=http://HOST:PORT/v1."
        )
    master: Endpoint | None = values["master"]
    if master is None:
        for name in ("metadata_url", "metrics_url", "local_hostname"):
            if values[name] is not None:
                raise pytest.UsageError(
                    f"{SETTINGS_BY_NAME[name].ini} (from {sources[name]}) only applies to an attached "
                    "cluster. Fix: also give --mooncake-master=HOST:PORT, or drop it to spawn a local cluster."
                )
        values["store_nodes"] = 2 if values["store_nodes"] is None else values["store_nodes"]
        if values["store_nodes"] < 1:
            raise pytest.UsageError(
                f"mooncake_store_nodes = {values['store_nodes']} (from {sources['store_nodes']}): "
                "a spawned cluster needs at least 1 store node to hold data."
            )
        values["lease_ttl"] = values["lease_ttl"] or 1.0
        values["client_ttl"] = values["client_ttl"] or 5.0
        if values["ha_masters"] == 1:  # a negative count never gets here: its parser refuses it
            raise pytest.UsageError(
                f"mooncake_ha_masters = {values['ha_masters']} (from {sources['ha_masters']}): "
                "high availability needs at least 2 masters (0 spawns one plain master)."
            )
    else:
        values["metadata_url"] = values["metadata_url"] or f"http://{master.host}:8080/metadata"
        values["metrics_url"] = values["metrics_url"] or f"http://{master.host}:9003"
        values["store_nodes"] = values["store_nodes"] or 0
        values["lease_ttl"] = values["lease_ttl"] or 10.0
        values["client_ttl"] = values["client_ttl"] or 10.0
    return MooncakeConfig(
        **values,
        scenario_definitions=MappingProxyType(dict(extras.get("scenario_definitions", {}))),
        machines=MappingProxyType(dict(extras.get("machines", {}))),
        sources=MappingProxyType(sources),
    )

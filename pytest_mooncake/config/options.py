"""Every setting, declared once as a field of ``MooncakeConfig``, read once into that frozen config.

Each field declared with ``declare`` (see ``settings``) yields a CLI option ``--mooncake-<name>``,
an ini key ``mooncake_<name>``, an environment variable ``MOONCAKE_<NAME>`` and its YAML keys
(``yamlconfig`` reads them); scripts/settings_table.py writes the docs' table and the routes the
plugin registers at load (``routes``) from the same declarations. Only a mooncake session imports
this module. Precedence: fixture-factory argument > CLI > environment > ini > YAML file > default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pytest_mooncake.config import parsing as p
from pytest_mooncake.config.markers import SCENARIO_ALIASES, SCENARIOS
from pytest_mooncake.config.parsing import HostPort
from pytest_mooncake.config.routes import ACTIVATE_KEY, CONFIG_KEY, given_routes
from pytest_mooncake.config.settings import Joined, Setting, declare, declared
from pytest_mooncake.config.yamlconfig import EXTRA_KEYS, load_yaml_settings

# The serving topologies (pytest_mooncake.endpoints.topology describes each).
TOPOLOGY_NAMES = ("prefix-cache", "baseline", "mooncake-store", "tiered", "cross-instance", "pd-store", "pd", "lmcache")


def _scenario_names(value: object) -> tuple[str, ...]:
    return tuple(SCENARIO_ALIASES.get(name, name) for name in p.parse_names(value))


@dataclass(frozen=True)
class MooncakeConfig:
    """The effective settings of a session (or of one factory, after overrides)."""

    config_file: Path | None = declare("YAML test config (the guides' test_config.yaml format)", p.parse_path, metavar="FILE",
                                       top_level=False, alias="config")
    master: HostPort | None = declare("Attach to the Mooncake master at HOST:PORT; spawn a local cluster when unset", p.parse_endpoint, metavar="HOST:PORT",
                                      joined=Joined("mooncake", "{master_ip}:{master_port}", MappingProxyType({"master_port": 50051})))
    metadata_url: str | None = declare("Transfer Engine metadata server of an attached cluster", p.parse_metadata_url, attached="http://{master_host}:8080/metadata", metavar="URL",
                                       joined=Joined("mooncake", "http://{master_ip}:{metadata_port}/metadata"))
    metrics_url: str | None = declare("Admin/metrics HTTP base URL of an attached master", p.parse_url, attached="http://{master_host}:9003", metavar="URL",
                                      joined=Joined("mooncake", "http://{master_ip}:{metrics_port}"))
    protocol: str = declare("Transfer protocol of the store clients: tcp or rdma", p.choice("tcp", "rdma"), "tcp", metavar="tcp|rdma", yaml=("mooncake.protocol",))
    rdma_devices: str = declare("RDMA devices for the store clients, e.g. mlx5_0,mlx5_1 (empty: auto)", p.parse_text, "", metavar="DEVICES", yaml=("mooncake.device_name",))
    local_hostname: str | None = declare("Address our store clients advertise to an attached cluster (default: the interface routing to the master)", p.parse_text, metavar="HOST")
    store_nodes: int = declare("Store-node processes to spawn", p.parse_int, "2", attached="0", metavar="N")
    segment_size: int = declare("Memory each spawned store node contributes to the pool (binary units, at least 16MiB)", p.parse_segment_size, "64MiB", metavar="SIZE", yaml=("mooncake.global_segment_size",))
    local_buffer_size: int = declare("Local transfer buffer of each store client; caps the object size of put/get", p.parse_size, "32MiB", metavar="SIZE", yaml=("mooncake.local_buffer_size",))
    lease_ttl: float = declare("Object lease after a read: passed to a spawned master, assumed for an attached one", p.parse_positive_duration, "1s", attached="10s", metavar="DURATION")
    client_ttl: float = declare("Seconds until the master expires a silent client: passed to a spawned master, assumed for an attached one", p.parse_positive_duration, "5s", attached="10s", metavar="DURATION")
    netns: str = declare("Isolate spawned Mooncake processes in a private network namespace: auto, on, off", p.choice("auto", "on", "off"), "auto", metavar="auto|on|off")
    multi_host: bool = declare("Give the spawned master and every store node a network namespace of its own, joined by a bridge over veth pairs, so a fault can hit one node's link (needs root; default: all on one namespace's loopback)", p.parse_bool, "no", metavar="yes|no")
    ha_masters: int = declare("Spawn N masters with high availability through a spawned etcd (etcd on $PATH: Debian's etcd-server); clients find the leader through etcd:// (0: one plain master)", p.parse_int, "0", metavar="N")
    soak_ops: int = declare("Store operations of the soak test (suites/store/test_soak.py); 100000 or more for the full run", p.parse_positive_int, "12000", metavar="N")
    allow_eviction: bool = declare("Let tests fill an ATTACHED cluster past its capacity, and lift the serving runs' KV budget on a Mooncake topology. Mooncake's eviction is global: this EVICTS OTHER TENANTS' KV (spawned clusters always allow it)", p.parse_bool, "no", metavar="yes|no")
    master_bin: Path | None = declare("Path of the mooncake_master binary to spawn (default: the one in the Mooncake wheel)", p.parse_path, metavar="PATH")
    bench_bin: Path | None = declare("Path of the transfer_engine_bench binary (default: the one in the Mooncake wheel)", p.parse_path, metavar="PATH")
    openai_base_url: str | None = declare("OpenAI-compatible endpoint to test, e.g. http://10.0.0.5:8000/v1 (default: spawn vLLM when installed)", p.parse_openai_url, metavar="URL",
                                          yaml=("openai_api.base_url", "proxy.url"))
    baseline_url: str | None = declare("OpenAI-compatible endpoint without KV reuse for A/B comparisons (default: spawn vLLM with prefix caching off)", p.parse_openai_url, metavar="URL")
    topology: str = declare("Serving topology the serving suites measure: prefix-cache, baseline, mooncake-store, tiered, cross-instance, pd-store, pd or lmcache (docs: Serving and topologies)", p.choice(*TOPOLOGY_NAMES), "prefix-cache", metavar="NAME")
    reader_url: str | None = declare("The attached cross-instance topology's second instance, which serves the hit rounds (--mooncake-openai-base-url is the writer)", p.parse_openai_url, metavar="URL")
    kv_pool_size: int = declare("Memory of each of the 2 store nodes that hold vLLM's KV in a spawned Mooncake topology (binary units, at least 16MiB)", p.parse_segment_size, "1GiB", metavar="SIZE")
    vllm_python: Path | None = declare("Python interpreter that has vLLM, used to spawn servers (default: this one)", p.parse_path, metavar="PATH")
    api_key: str | None = declare("API key for the OpenAI-compatible endpoint", p.parse_text, metavar="KEY", secret=True, yaml=("openai_api.api_key",))
    model: str | None = declare("Model name served by the endpoint (default: the first of /v1/models)", p.parse_text, metavar="NAME", yaml=("model.name", "openai_api.model_name"))
    tokenizer: Path | None = declare("The served model's tokenizer (tokenizer.json or a directory holding it) for prompts exact in tokens, when the endpoint has no /tokenize (e.g. a PD proxy)", p.parse_path, metavar="PATH")
    max_tokens: int = declare("Completion tokens per request", p.parse_positive_int, "64", metavar="N", yaml=("model.max_tokens",))
    temperature: float = declare("Sampling temperature (0 makes cache-hit output comparable to cold output)", p.parse_float, "0.0", metavar="T", yaml=("model.temperature",))
    rounds: int = declare("Measurement rounds per scenario (round 1 cold, later rounds cache hits; at least 2)", p.parse_rounds, "2", metavar="N", yaml=("test.rounds",))
    requests_per_scenario: int = declare("Requests per round of one look of a sequential verdict (default: each scenario's own look size); the budget is --mooncake-verdict-looks looks", p.parse_positive_int, "10", metavar="N", yaml=("test.requests_per_scenario",))
    verdict_looks: int = declare("Looks a sequential verdict may take at most (each look: a cold and a hit round of a look's requests, then the interval is recomputed: at 99% at the first look, at 1 - 4%/(N - 1) at the others); its request budget is N looks", p.parse_positive_int, "24", metavar="N")
    verdict_seconds: float = declare("Time budget of one sequential verdict: no new look starts after it; INCONCLUSIVE when it ends undecided", p.parse_positive_duration, "300s", metavar="DURATION")
    concurrency: int | None = declare("Requests in flight at once (none: no limit)", p.parse_optional_positive_int, "1", metavar="N", yaml=("test.concurrency",))
    # The YAML's test_scenarios name the scenarios too (yamlconfig), below a top-level scenarios list.
    scenarios: tuple[str, ...] = declare("Comma-separated scenarios to run (default: all collected)", _scenario_names, "", metavar="NAMES")
    trace: Path | None = declare("Mooncake trace (JSONL) to replay (default: the bundled conversation trace)", p.parse_path, metavar="FILE")
    trace_requests: int = declare("Replay the first N requests of the trace", p.parse_positive_int, "200", metavar="N")
    trace_scale: int = declare("Shrink every 512-token trace block by this factor to fit a small server", p.parse_positive_int, "8", metavar="N")
    trace_speed: float = declare("Replay the trace's timestamps this many times faster", p.parse_float, "1.0", metavar="X")
    startup_timeout: float = declare("Seconds a spawned service may take to become ready", p.parse_positive_duration, "180s", metavar="SECONDS")
    request_timeout: float = declare("Seconds one request or store operation may take", p.parse_positive_duration, "300s", metavar="SECONDS")
    results_dir: Path = declare("Directory for result JSON, reports and service logs", p.parse_path, ".mooncake-results", metavar="DIR")
    save: str | None = declare("Save this run's results as the named baseline", p.parse_text, metavar="NAME")
    compare: str | None = declare("Compare this run against the named baseline", p.parse_text, metavar="NAME")
    compare_fail: Mapping[str, float] | None = declare("Fail the session on a regression against --mooncake-compare, e.g. ttft_p90:10%,throughput:5%", p.parse_rules, metavar="EXPR")
    profile: str | None = declare("Qualification profile (ci/profiles/NAME.yaml, or a YAML path) whose thresholds fill in those a test's mooncake_perf marker leaves unset", p.parse_text, metavar="NAME")
    report: tuple[str, ...] = declare("Evaluation report formats to write into the results directory at session end: md, html or md,html (default: none)", p.parse_formats, "", metavar="FORMATS")
    server_cost: float | None = declare("Monthly cost of one serving server, for the evaluation report's cost model", p.parse_float, metavar="AMOUNT")
    capacity_ttft_slo: p.LatencyLimit = declare("TTFT p90 limit of the capacity search: a duration (500ms) or a multiple of the baseline's unloaded TTFT (4x)", p.parse_latency_limit, "4x", metavar="LIMIT")
    capacity_tpot_slo: p.LatencyLimit | None = declare("TPOT p90 limit of the capacity search, in the same forms (default: none)", p.parse_latency_limit, metavar="LIMIT")
    capacity_step_requests: int = declare("Poisson arrivals per rate step of the capacity search; the first fifth warm the queue and are not counted", partial(p.parse_int, minimum=10), "30", metavar="N")
    capacity_step_duration: float = declare("Shortest rate step of the capacity search: at least this long of arrivals, so an overloaded server's queue can build", p.parse_positive_duration, "10s", metavar="DURATION")
    capacity_deadline: float = declare("Time limit of the whole capacity search, all topologies together, once their servers are up", p.parse_positive_duration, "180s", metavar="DURATION")
    capacity_scenario: str | None = declare("Workload mix of the capacity search: a scenario name (default: 8 shared 2,048-token documents, each request a new 64-token question)", p.parse_text, metavar="NAME")
    # From the guides' YAML only: scenario definitions and the machine list.
    scenario_definitions: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    machines: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_defaults(cls, **overrides: object) -> MooncakeConfig:
        """The defaults with ``overrides`` applied: configuration for use outside a pytest run."""
        return _finish({}, {}, {}).with_overrides(**overrides)

    @classmethod
    def of(cls, config: pytest.Config) -> MooncakeConfig:
        """The session's settings, where no fixture reaches (``pytest_generate_tests``, hooks); the
        first call makes the session a mooncake session."""
        if CONFIG_KEY not in config.stash:
            config.stash[ACTIVATE_KEY](config)
        return config.stash[CONFIG_KEY]

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
            parsed[name] = setting.parse_from(raw, "a fixture-factory argument")
        return dataclasses.replace(self, **parsed)

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-friendly values, secrets replaced."""
        out: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret and value:
                value = "***"
            out[setting.name] = str(value) if isinstance(value, (Path, HostPort, p.LatencyLimit)) else value
        out["compare_fail"] = dict(self.compare_fail) if self.compare_fail else None
        out["scenarios"] = list(self.scenarios)
        out["report"] = list(self.report)
        return out


SETTINGS: tuple[Setting, ...] = declared(MooncakeConfig)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
def _raw_values(config: pytest.Config) -> dict[str, tuple[object, str]]:
    """The winning raw value and its source for every setting that is set anywhere."""
    found = given_routes(config)
    if "config_file" in found:
        raw, source = found["config_file"]
        path = SETTINGS_BY_NAME["config_file"].parse_from(raw, source)
        found = {**load_yaml_settings(path, SETTINGS), **found}
    return found


def load_config(config: pytest.Config) -> MooncakeConfig:
    """Read, parse and cross-check every setting; raise UsageError on a bad one."""
    raw = _raw_values(config)
    given: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in raw:
            value, sources[setting.name] = raw[setting.name]
            given[setting.name] = setting.parse_from(value, sources[setting.name])
    extras = {key: raw[key][0] for key in EXTRA_KEYS if key in raw}
    return _finish(given, sources, extras)


def _finish(given: dict[str, Any], given_sources: dict[str, str], extras: dict[str, Any]) -> MooncakeConfig:
    """The config from the ``given`` settings, the others at their defaults for the mode (spawned or
    attached); UsageError on settings that contradict each other."""
    master: HostPort | None = given.get("master")
    host = master.host if master is not None else None
    values = {s.name: given[s.name] if s.name in given else s.fallback(host) for s in SETTINGS}
    sources = {s.name: given_sources.get(s.name, "default") for s in SETTINGS}
    _cross_check(given, values, sources)
    _check_scenario_names(values["scenarios"], extras.get("scenario_definitions", {}), sources["scenarios"])
    return MooncakeConfig(
        **values,
        scenario_definitions=MappingProxyType(dict(extras.get("scenario_definitions", {}))),
        machines=MappingProxyType(dict(extras.get("machines", {}))),
        sources=MappingProxyType(sources),
    )


# The session store client's smallest local buffer: the store suites' largest object is one
# 128-token KV block of Llama-3.1-8B (16 MiB, suites/store/test_op_latency.py). Factory
# overrides are not held to it: the suites' own small clusters write objects of 1 MiB at most.
MIN_LOCAL_BUFFER = 16 * 2**20


def _check_scenario_names(names: tuple[str, ...], definitions: Mapping[str, Any], source: str) -> None:
    """A scenario name that matches nothing would deselect every scenario test and end the run green."""
    known = [*SCENARIOS, *(name for name in definitions if name not in SCENARIOS)]
    unknown = [name for name in names if name not in known]
    if not unknown:
        return
    import difflib  # only for a bad name: every pytest run imports this module

    hints = [f"{name!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(name, known, 1))
             else repr(name) for name in unknown]
    raise pytest.UsageError(
        f"mooncake_scenarios = {','.join(names)!r} (from {source}): unknown scenario {', '.join(hints)}; "
        f"known: {', '.join(known)}"
    )


def _cross_check(given: Mapping[str, Any], values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
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
    if "local_buffer_size" in given and values["local_buffer_size"] < MIN_LOCAL_BUFFER:
        size = values["local_buffer_size"]
        raise pytest.UsageError(
            f"mooncake_local_buffer_size = {size} B ({size / 2**20:g} MiB) (from {sources['local_buffer_size']}): "
            f"expected a size of at least 16MiB, e.g. 32MiB: the store suites put objects of up to 16 MiB (one "
            "128-token KV block of Llama-3.1-8B) through the session's store client, and a put larger than its "
            "buffer fails."
        )
    if values["master"] is not None:
        return
    if values["multi_host"] and values["netns"] == "off":
        raise pytest.UsageError(
            f"mooncake_multi_host (from {sources['multi_host']}) puts every spawned process in a network namespace "
            f"of its own, but mooncake_netns = 'off' (from {sources['netns']}) asks for none. "
            "Fix: drop one of the two (--mooncake-netns=auto or on works with --mooncake-multi-host)."
        )
    for name in ("metadata_url", "metrics_url", "local_hostname"):
        if name in given:
            raise pytest.UsageError(
                f"{SETTINGS_BY_NAME[name].ini} (from {sources[name]}) only applies to an attached "
                "cluster. Fix: also give --mooncake-master=HOST:PORT, or drop it to spawn a local cluster."
            )
    if values["store_nodes"] < 1:
        raise pytest.UsageError(
            f"mooncake_store_nodes = {values['store_nodes']} (from {sources['store_nodes']}): "
            "a spawned cluster needs at least 1 store node to hold data."
        )
    if values["ha_masters"] == 1:  # a negative count never gets here: its parser refuses it
        raise pytest.UsageError(
            f"mooncake_ha_masters = {values['ha_masters']} (from {sources['ha_masters']}): "
            "high availability needs at least 2 masters (0 spawns one plain master)."
        )

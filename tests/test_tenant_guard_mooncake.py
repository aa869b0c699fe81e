"""The tenant guard on a Mooncake topology: a serving run's KV goes into the shared pool, and must
not push the tenant's keys out.

The operator's deployment, all in one network namespace: the tenant's master and pool owner
(``test_tenant_guard.tenant_cluster``, with a pool small enough to matter), a vLLM with
``MooncakeStoreConnector`` in ``standalone-store`` mode whose KV lands in that pool, and the
tenant's checksummed keys. ``pytest`` then runs two serving scenarios in attach mode against it
(``--mooncake-topology=mooncake-store``), four requests a round. Unbudgeted they need about
64 + 120 MiB of KV; the pool has about 150 MiB below its 90% eviction watermark. So:

1. without the opt-in, the KV budget shrinks or skips what does not fit below 80%: every tenant
   key reads back exactly, the master evicts nothing, and the run says what it left in the pool;
2. the same run with ``--mooncake-allow-eviction`` (no budget) makes the master evict, and the
   run says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.connectors import StoreTarget, mooncake_store_connector_config, vllm_args
from pytest_mooncake.endpoints.server import Endpoint, spawned_vllm, vllm_available
from pytest_mooncake.endpoints.topology import CONNECTOR_BUFFER, KV_BLOCK_TOKENS
from pytest_mooncake.runtime.executor import read_tail
from pytest_mooncake.runtime.janitor import Janitor

from .conftest import needs_cluster
from .test_tenant_guard import MASTER, METADATA, TENANT_KEYS, Tenant, _wait, tenant_cluster

pytestmark = [needs_cluster, pytest.mark.skipif(vllm_available(None) is not None, reason=str(vllm_available(None)))]

POOL = "192MB"
SERVING = ["suites/serving/test_reuse.py", "-k", "test_high_reuse or test_low_reuse", "--mooncake-topology=mooncake-store"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tenant, Endpoint]]:
    workdir = tmp_path_factory.mktemp("tenant-mooncake")
    janitor = Janitor()
    try:
        with tenant_cluster(workdir, POOL) as tenant:
            # standalone-store: the instance contributes no memory, its KV lives in the tenant's pool.
            target = StoreTarget(MASTER, METADATA, "127.0.0.1", global_segment_size=0, local_buffer_size=CONNECTOR_BUFFER)
            config_path = workdir / "vllm-mooncake.json"
            config_path.write_text(json.dumps(mooncake_store_connector_config(target)))
            env = {"MOONCAKE_CONFIG_PATH": str(config_path), "MC_TCP_BIND_ADDRESS": "127.0.0.1", "VLLM_HOST_IP": "127.0.0.1"}
            args = ("--block-size", str(KV_BLOCK_TOKENS), *vllm_args("mooncake-store"))
            with spawned_vllm(MooncakeConfig.from_defaults(), workdir, janitor, label="tenant-vllm", args=args, env=env,
                              netns=tenant.netns) as endpoint:
                yield tenant, endpoint
    finally:
        janitor.close()


def _serve(tenant: Tenant, endpoint: Endpoint, *extra: str) -> tuple[str, float]:
    """The serving run in attach mode: (its output, keys the master evicted meanwhile)."""
    before = tenant.metrics()["master_evicted_key_count"]
    run = tenant.run_suites(*SERVING, f"--mooncake-openai-base-url={endpoint.base_url}", *extra)
    evicted = tenant.metrics()["master_evicted_key_count"] - before
    print(run.stdout[-6000:])
    # Exit 1: a serving verdict on 4 requests may fail or be inconclusive on a busy host; the tests judge the rest.
    assert run.returncode in (0, 1), f"the serving run broke (exit {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    return run.stdout, evicted


def test_a_budgeted_serving_run_leaves_every_tenant_key_and_evicts_nothing(deployment: tuple[Tenant, Endpoint]) -> None:
    tenant, endpoint = deployment
    manifest = tenant.write("tenant")
    _wait(lambda: tenant.metrics()["master_key_count"] >= TENANT_KEYS, f"{TENANT_KEYS} tenant keys on the master")
    output, evicted = _serve(tenant, endpoint)
    outcome = tenant.verify(manifest)
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert all(line.startswith("FAILED suites/serving/test_reuse.py") and "EVICTION" not in line for line in failed), failed
    # The budget had to act: the scenarios as defined do not fit the pool's room.
    assert re.search(r"SHRUNK: 4 -> \d requests a round|kv budget: \w+ needs", output), output[-4000:]
    assert "the pool now holds" in output and "[kv budget] the budgeted tests of this run planned" in output, \
        "the run must say how much KV it left in the pool"
    assert outcome == {"exact": TENANT_KEYS, "missing": [], "wrong": []}, \
        f"the budgeted run harmed the tenant: {outcome}\nmaster log:\n{read_tail(tenant.workdir / 'master.log')}"
    assert evicted == 0, f"the master evicted {evicted:g} keys during a budgeted attach run"


def test_the_same_run_unbudgeted_evicts(deployment: tuple[Tenant, Endpoint]) -> None:
    tenant, endpoint = deployment
    manifest = tenant.write("tenant-optin")
    output, evicted = _serve(tenant, endpoint, "--mooncake-allow-eviction")
    outcome = tenant.verify(manifest)
    print(f"with --mooncake-allow-eviction the serving run made the master evict {evicted:g} keys, "
          f"{len(outcome['missing'])} of the tenant's {TENANT_KEYS}")  # type: ignore[arg-type]
    assert "[kv budget] lifted by --mooncake-allow-eviction" in output
    assert evicted > 0, f"unbudgeted, the serving run's KV should have pushed the pool past its watermark: {output[-3000:]}"
    assert "EVICTION: the master evicted" in output and "allowed by --mooncake-allow-eviction" in output, output[-3000:]
    assert outcome["wrong"] == [], f"eviction must leave clean misses, never wrong bytes: {outcome}"

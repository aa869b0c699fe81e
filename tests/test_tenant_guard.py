"""The guard: a whole attach-mode run of the suites leaves another tenant's data exactly as it was.

A "tenant" is started outside the run under test, the way an operator runs a deployment: a
``mooncake_master``, a pool-owning ``mooncake_client`` and a client that writes keys with
known checksums, all in a network namespace of their own. ``pytest suites/`` then runs in
attach mode against that cluster (inside the same namespace, as a host beside the master
would). Afterwards every tenant key must read back exactly and the master must report no
eviction. The same cluster with ``--mooncake-allow-eviction`` shows what the opt-in costs.

Two serving tests are left out because in attach mode nothing of theirs reaches the cluster:
the A/B test and the capacity search compare a spawned vLLM without reuse with one using its
local prefix cache (the capacity search adds its Mooncake topology only beside a cluster it
spawned). They cost this run two vLLM start-ups and about two minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_mooncake.cluster.metrics import Snapshot, parse_metrics
from pytest_mooncake.runtime.binaries import find_binary
from pytest_mooncake.runtime.executor import ServiceProcess, read_tail
from pytest_mooncake.runtime.netns import NetworkNamespace
from pytest_mooncake.runtime.probes import HTTPProbe, http_get_text

from .conftest import REPO, needs_cluster

pytestmark = needs_cluster

MASTER, METRICS, METADATA = "127.0.0.1:50051", "http://127.0.0.1:9003", "http://127.0.0.1:8080/metadata"
POOL = "512MB"
TENANT_KEYS, TENANT_SIZE = 64, 256 << 10
INNER_TIMEOUT_S = 1500.0


@dataclass
class Tenant:
    netns: NetworkNamespace
    workdir: Path

    def metrics(self) -> Snapshot:
        return parse_metrics(http_get_text(METRICS + "/metrics", netns=self.netns))

    def client(self, action: str, manifest: Path, **options: object) -> str:
        extra = [f"--{name}={value}" for name, value in options.items()]
        done = subprocess.run(
            self.netns.wrap([sys.executable, str(REPO / "tests" / "tenant_client.py"), action, f"--master={MASTER}",
                             f"--metadata={METADATA}", f"--manifest={manifest}", *extra]),
            capture_output=True, text=True, timeout=120, env={**os.environ, "MC_TCP_BIND_ADDRESS": "127.0.0.1"},
        )
        assert done.returncode == 0, f"tenant {action} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    def write(self, prefix: str) -> Path:
        manifest = self.workdir / f"{prefix}.json"
        self.client("write", manifest, prefix=prefix, count=TENANT_KEYS, size=TENANT_SIZE)
        return manifest

    def verify(self, manifest: Path) -> dict[str, object]:
        return dict(json.loads(self.client("verify", manifest).strip().splitlines()[-1]))

    def run_suites(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pytest`` in attach mode against the tenant's cluster, from a host inside its namespace."""
        command = [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-rfEs", "--durations=10",
                   f"--mooncake-master={MASTER}", f"--mooncake-metadata-url={METADATA}",
                   f"--mooncake-metrics-url={METRICS}", f"--mooncake-results-dir={self.workdir / 'results'}",
                   # Fewer requests: the guard judges the tenant's keys, not the serving verdicts.
                   "--mooncake-requests-per-scenario=4", "--mooncake-trace-requests=40"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MOONCAKE_"))}
        return subprocess.run(self.netns.wrap(command), cwd=REPO, capture_output=True, text=True,
                              timeout=INNER_TIMEOUT_S, env=env)


def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@contextmanager
def tenant_cluster(workdir: Path, pool_size: str = POOL) -> Iterator[Tenant]:
    """The tenant's master and pool owner, in a network namespace of their own."""
    netns = NetworkNamespace.create()
    processes: list[ServiceProcess] = []
    try:
        master = ServiceProcess(
            "tenant-master",
            [str(find_binary("mooncake_master", None, "--mooncake-master-bin")), "--rpc_port=50051",
             "--metrics_port=9003", "--enable_http_metadata_server=true", "--http_metadata_server_port=8080",
             "--logtostderr"],
            HTTPProbe(METRICS + "/health", body_pattern=r'"service_ready":\s*true', netns=netns),
            workdir / "master.log", timeout=60, netns=netns,
        )
        processes.append(master)
        master.start()
        tenant = Tenant(netns, workdir)
        pool = ServiceProcess(
            "tenant-pool",
            [str(find_binary("mooncake_client", None, "--mooncake-master-bin")), "--host=127.0.0.1",
             f"--global_segment_size={pool_size}", "--local_buffer_size=64MB", f"--master_server_address={MASTER}",
             f"--metadata_server={METADATA}", "--protocol=tcp", "--port=50052"],
            HTTPProbe(METRICS + "/metrics", body_pattern=r"master_total_capacity_bytes [1-9]", netns=netns),
            workdir / "pool.log", timeout=60, env={"MC_TCP_BIND_ADDRESS": "127.0.0.1"}, netns=netns,
        )
        processes.append(pool)
        pool.start()
        yield tenant
    finally:
        for process in reversed(processes):
            process.stop()
        netns.delete()


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    with tenant_cluster(tmp_path_factory.mktemp("tenant")) as started:
        yield started


def test_a_whole_attach_run_leaves_every_tenant_key_exact(tenant: Tenant) -> None:
    manifest = tenant.write("tenant")
    _wait(lambda: tenant.metrics()["master_key_count"] >= TENANT_KEYS, f"{TENANT_KEYS} tenant keys on the master")
    before = tenant.metrics()
    run = tenant.run_suites("suites/", "--deselect=suites/serving/test_ab.py::test_ab_high_reuse",
                            "--deselect=suites/serving/test_capacity.py::test_capacity_gain")
    after = tenant.metrics()
    outcome = tenant.verify(manifest)
    evicted = after["master_evicted_key_count"] - before["master_evicted_key_count"]
    summary = run.stdout[-6000:]
    print(summary)
    # Serving verdicts judge the spawned vLLM, not the store, and a busy host can make them
    # inconclusive; anything else failing, or the run breaking, fails the guard.
    failed = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert run.returncode in (0, 1) and all(line.startswith("FAILED suites/serving/") for line in failed), \
        f"the attach-mode run failed (exit {run.returncode}):\n{summary}\n{run.stderr[-2000:]}"
    assert "fills the attached cluster past its capacity" in run.stdout, "the overfill tests were not skipped"
    assert "what this run left in attached clusters" in run.stdout and "leftover keys of this run" in run.stdout
    assert outcome == {"exact": TENANT_KEYS, "missing": [], "wrong": []}, \
        f"the attach run harmed the tenant: {outcome}\nmaster log:\n{read_tail(tenant.workdir / 'master.log')}"
    assert evicted == 0, f"the master evicted {evicted:g} keys during an attach run without --mooncake-allow-eviction"


def test_the_opt_in_evicts_tenant_keys_and_says_so(tenant: Tenant) -> None:
    manifest = tenant.write("tenant-optin")
    before = tenant.metrics()
    run = tenant.run_suites("suites/store/test_eviction.py", "-k", "overfill", "--mooncake-allow-eviction")
    evicted = tenant.metrics()["master_evicted_key_count"] - before["master_evicted_key_count"]
    outcome = tenant.verify(manifest)
    print(f"with --mooncake-allow-eviction the overfill evicted {evicted:g} keys, {len(outcome['missing'])} "  # type: ignore[arg-type]
          f"of the tenant's {TENANT_KEYS}")
    assert run.returncode == 0, f"the opt-in overfill failed (exit {run.returncode}):\n{run.stdout[-4000:]}"
    assert "the master evicted" in run.stdout and "keys of every tenant" in run.stdout, run.stdout[-3000:]
    assert evicted > 0 and outcome["missing"], f"2.5x the pool went in, yet no tenant key was evicted: {outcome}"
    assert outcome["wrong"] == [], f"eviction must leave clean misses, never wrong bytes: {outcome}"

"""A real Mooncake cluster: spawned and isolated, attached and left alone, interrupted and cleaned up."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pytest_mooncake.runtime.binaries import find_binary
from pytest_mooncake.runtime.netns import NetworkNamespace
from pytest_mooncake.runtime.probes import http_get_text

from .conftest import REPO, needs_cluster

pytestmark = needs_cluster

ISOLATION_TEST = """
import re, subprocess
def test_nothing_listens_outside(mooncake_master, mooncake_store_nodes, mooncake_store):
    assert mooncake_master.netns is not None
    root = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ours = {str(mooncake_master.pid)} | {str(node.pid) for node in mooncake_store_nodes}
    leaked = [line for line in root.splitlines() if any(f"pid={pid}," in line for pid in ours)]
    assert not leaked, leaked
    inside = subprocess.run(["ip", "netns", "exec", mooncake_master.netns.name, "ss", "-ltnpH"],
                            capture_output=True, text=True, check=True).stdout
    assert f"pid={mooncake_master.pid}," in inside, "the master must listen inside its namespace"
    assert len(mooncake_store_nodes) == 2
"""


def _marked_processes(pytest_pid: int) -> list[psutil.Process]:
    """Processes started by executors of the pytest run with this PID (mirakuru's env marker)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("mirakuru_uuid", "").startswith(f"{pytest_pid}:"):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _namespaces_of(pytest_pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"pmc-{pytest_pid}-")]


def test_spawned_cluster_is_real_and_isolated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_isolation=ISOLATION_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mooncake: spawn (netns=auto) | protocol=tcp | store_nodes=2 x 64 MiB*"])


def test_cluster_suite_passes_on_the_embedded_cluster(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(REPO / "suites" / "cluster"), "-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=3)


# The multi-host cluster adds a switch namespace, a namespace per host and their veths and
# bridge; with HA, an etcd and several masters. None of it may outlive pytest either.
_MULTI_HOST = {"MOONCAKE_MULTI_HOST": "yes"}
_MULTI_HOST_HA = {**_MULTI_HOST, "MOONCAKE_HA_MASTERS": "2"}


# Each case interrupts at its own seeded moment (0.3 .. 6 s): spread over the start-up, reproducible.
@pytest.mark.parametrize(
    ("signum", "seed", "cluster"),
    [(signal.SIGINT, 1, {}), (signal.SIGINT, 2, {}), (signal.SIGINT, 3, {}), (signal.SIGTERM, 4, {}),
     (signal.SIGKILL, 5, {}), (signal.SIGINT, 6, _MULTI_HOST), (signal.SIGKILL, 7, _MULTI_HOST)]
    + ([(signal.SIGKILL, 8, _MULTI_HOST_HA)] if shutil.which("etcd") else []),
)
def test_interrupted_run_leaves_nothing_behind(pytester: pytest.Pytester, signum: int, seed: int,
                                               cluster: dict[str, str]) -> None:
    pytester.makepyfile(
        test_slow="""
        import time
        def test_slow(mooncake_store):
            time.sleep(60)
        """
    )
    delay = random.Random(seed).uniform(0.3, 6.0)
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_slow.py"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **cluster},
        # As at a terminal: a run started in the background inherits SIGINT ignored, and the
        # child would sleep out its test instead of being interrupted.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay)
    child.send_signal(signum)
    output, _ = child.communicate(timeout=90)
    deadline = time.monotonic() + 20  # the janitor's grace after a SIGKILL
    while time.monotonic() < deadline and (_marked_processes(child.pid) or _namespaces_of(child.pid)):
        time.sleep(0.2)
    where = f"{signal.Signals(signum).name} after {delay:.2f} s, {cluster or 'one namespace'}; output:\n{output[-2000:]}"
    assert not _marked_processes(child.pid), f"processes outlived pytest ({where})"
    assert not _namespaces_of(child.pid), f"namespaces outlived pytest ({where})"


@pytest.fixture
def hand_started_cluster(tmp_path: Path) -> Iterator[tuple[NetworkNamespace, dict[str, int], list[subprocess.Popen[bytes]]]]:
    """A master and a standalone mooncake_client, started the way an operator would."""
    netns = NetworkNamespace.create()
    ports = {"rpc": 50051, "metrics": 9003, "metadata": 8080, "client": 50052}
    master_bin = find_binary("mooncake_master", None, "--mooncake-master-bin")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        log = open(tmp_path / "master.log", "wb")  # noqa: SIM115 - closed with the process
        processes.append(
            subprocess.Popen(
                netns.wrap([str(master_bin), "--rpc_address=127.0.0.1", "--metrics_host=127.0.0.1",
                            "--enable_http_metadata_server=true", "--logtostderr"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )
        _wait_for(netns, "import socket; socket.create_connection(('127.0.0.1', 50051), 1)")
        processes.append(
            subprocess.Popen(
                netns.wrap([str(master_bin.parent / "mooncake_client"), "--global_segment_size=64MB",
                            "--master_server_address=127.0.0.1:50051", "--host=127.0.0.1",
                            "--metadata_server=http://127.0.0.1:8080/metadata", "--protocol=tcp"]),
                stdout=open(tmp_path / "client.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                start_new_session=True, env=_LOOPBACK_ENV,
            )
        )
        _wait_for(netns, "import socket; socket.create_connection(('127.0.0.1', 50052), 1)")
        _in_netns(netns, _PUT_OPERATOR_KEY)
        yield netns, ports, processes
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        netns.delete()


_PUT_OPERATOR_KEY = """
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
assert s.setup("127.0.0.1", "http://127.0.0.1:8080/metadata", 0, 16 << 20, "tcp", "", "127.0.0.1:50051") == 0
assert s.put("operator-key", b"keep me") == 0
"""


# Without it a Mooncake client in a namespace that has only `lo` finds "no valid LAN address".
_LOOPBACK_ENV = {**os.environ, "MC_TCP_BIND_ADDRESS": "127.0.0.1"}


def _in_netns(netns: NetworkNamespace, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        netns.wrap([sys.executable, "-c", code]), capture_output=True, text=True, timeout=60, check=True, env=_LOOPBACK_ENV
    )


def _wait_for(netns: NetworkNamespace, code: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run(netns.wrap([sys.executable, "-c", code]), capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{code!r} kept failing in {netns.name}")
        time.sleep(0.3)


def test_attach_mode_uses_and_leaves_a_hand_started_cluster(hand_started_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    netns, ports, processes = hand_started_cluster
    run = subprocess.run(
        netns.wrap([sys.executable, "-m", "pytest", str(REPO / "suites" / "cluster"), "-p", "no:cacheprovider",
                    "--mooncake-master=127.0.0.1:50051", "--mooncake-metadata-url=http://127.0.0.1:8080/metadata",
                    "--mooncake-metrics-url=http://127.0.0.1:9003", f"--mooncake-results-dir={tmp_path}"]),
        capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "mooncake: attach master=127.0.0.1:50051" in run.stdout
    assert all(process.poll() is None for process in processes), "attach mode must not stop the operator's services"
    keys = http_get_text("http://127.0.0.1:9003/get_all_keys", netns=netns)
    assert keys.split() == ["operator-key"], "the operator's key must stay, and ours must be gone"


def test_unreachable_master_fails_fast_with_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(mooncake_store): pass\n")
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--mooncake-master=127.0.0.1:1", timeout=60)
    assert time.monotonic() - started < 15
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Exit" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(
        [
            "ERROR: the attached endpoints failed their preflight:*",
            "*?FAIL? master RPC 127.0.0.1:1: TCP connect to 127.0.0.1:1: *refused*",
            "*fix: check --mooncake-master*",
        ]
    )


def test_doctor_in_spawn_mode(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--mooncake-doctor", timeout=60)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*?ok  ? mooncake_master: *mooncake_master", "*?ok  ? network namespace: *", "mooncake doctor: all * checks passed"])
    assert "Exit" not in result.stdout.str() + result.stderr.str() and result.stdout.str().count("checks passed") == 1


def test_doctor_reports_every_failing_endpoint(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--mooncake-doctor", "--mooncake-master=127.0.0.1:1", "--mooncake-metrics-url=http://127.0.0.1:1",
        "--mooncake-openai-base-url=http://127.0.0.1:1/v1", timeout=60,
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*?FAIL? master RPC*", "*?FAIL? master metrics*", "*?FAIL? metadata server*", "*?FAIL? OpenAI endpoint*", "*4 of 4 checks failed*"]
    )


def test_unreachable_openai_endpoint_fails_fast(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest_subprocess("--mooncake-openai-base-url=http://127.0.0.1:1/v1", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*?FAIL? OpenAI endpoint http://127.0.0.1:1/v1: GET /models: *refused*"])

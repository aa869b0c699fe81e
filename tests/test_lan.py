"""VirtualLan and LinkFaults with real namespaces, veths, qdiscs and nftables; a multi-host cluster."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from pytest_mooncake.cluster.faults import LinkFaults, LinkFaultUnsupported
from pytest_mooncake.runtime.netns import LAN_IFACE, NAME_PREFIX, NetworkNamespace, VirtualLan

from .conftest import needs_cluster

pytestmark = needs_cluster


@pytest.fixture
def lan() -> Iterator[VirtualLan]:
    created: list[str] = []
    network = VirtualLan(on_namespace=created.append)
    try:
        yield network
    finally:
        network.delete()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert not [name for name in created if name in listed], "VirtualLan.delete() left namespaces behind"


def _serve_once(netns: NetworkNamespace, address: str) -> tuple[int, threading.Thread]:
    with netns.entered():
        server = socket.create_server((address, 0))
    port = server.getsockname()[1]

    def answer() -> None:
        server.settimeout(10)
        try:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"pong")
        except OSError:
            pass
        finally:
            server.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return port, thread


def _reach(netns: NetworkNamespace, address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with netns.entered():
            conn = socket.create_connection((address, port), timeout)
        with conn:
            conn.settimeout(timeout)
            return conn.recv(4) == b"pong"
    except OSError:
        return False


def _links(netns: NetworkNamespace) -> list[str]:
    out = subprocess.run(["ip", "-n", netns.name, "-o", "link"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def test_hosts_reach_each_other_only_over_the_bridge(lan: VirtualLan) -> None:
    a, b = lan.add_host(), lan.add_host()
    assert (a.address, b.address) == ("10.77.0.1", "10.77.0.2")
    port, _ = _serve_once(b.netns, b.address)
    assert _reach(a.netns, b.address, port), "host a must reach host b through the bridge"
    assert _links(a.netns) == ["lo", LAN_IFACE]
    assert all(name == "lo" or name.startswith(NAME_PREFIX) for name in _links(lan.switch))
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert a.port not in root and "pmc-br0" not in root, "nothing of the LAN may appear in the root namespace"


def test_partition_cuts_one_host_and_heal_restores_it(lan: VirtualLan) -> None:
    a, b, c = lan.add_host(), lan.add_host(), lan.add_host()
    faults = LinkFaults(b)
    faults.partition()
    port, _ = _serve_once(b.netns, b.address)
    assert not _reach(a.netns, b.address, port, timeout=1.0), "a partitioned host must be unreachable"
    other, _ = _serve_once(c.netns, c.address)
    assert _reach(a.netns, c.address, other), "the other hosts keep talking"
    faults.heal()
    port, _ = _serve_once(b.netns, b.address)
    assert _reach(a.netns, b.address, port), "after heal() the host is reachable again"


def test_rate_and_loss_install_at_both_ends_and_heal_removes_them(lan: VirtualLan) -> None:
    lan.add_host()
    host = lan.add_host()
    faults = LinkFaults(host)
    faults.rate(1 << 20)
    for netns, device in ((host.switch.name, host.port), (host.netns.name, LAN_IFACE)):
        shown = subprocess.run(["tc", "-n", netns, "qdisc", "show", "dev", device], capture_output=True, text=True).stdout
        assert "tbf" in shown and "8388Kbit" in shown, shown
    if shutil.which("nft"):
        faults.loss(5)
        rules = subprocess.run(["ip", "netns", "exec", host.netns.name, "nft", "list", "ruleset"],
                               capture_output=True, text=True, check=True).stdout
        assert "numgen random mod 10000 < 500 drop" in rules
    faults.heal()
    shown = subprocess.run(["tc", "-n", host.netns.name, "qdisc", "show", "dev", LAN_IFACE], capture_output=True, text=True).stdout
    assert "tbf" not in shown
    rules = subprocess.run(["ip", "netns", "exec", host.netns.name, "nft", "list", "ruleset"],
                           capture_output=True, text=True).stdout if shutil.which("nft") else ""
    assert "pmc_faults" not in rules


def test_delay_without_netem_says_why_in_one_line(lan: VirtualLan) -> None:
    host = lan.add_host()
    try:
        LinkFaults(host).delay(10)
    except LinkFaultUnsupported as exc:
        assert "\n" not in str(exc) and "netem" in str(exc) and "fix:" in str(exc)
    else:
        shown = subprocess.run(["tc", "-n", host.netns.name, "qdisc", "show", "dev", LAN_IFACE],
                               capture_output=True, text=True).stdout
        assert "netem" in shown and "delay 10" in shown


MULTI_HOST_TEST = """
def test_hosts(mooncake_master, mooncake_store_nodes, mooncake_store):
    import subprocess
    names = {mooncake_master.netns.name} | {node.host.netns.name for node in mooncake_store_nodes}
    assert len(names) == 3, "the master and each node have a namespace of their own"
    assert mooncake_master.endpoint.host == "10.77.0.1"
    assert sorted(node.segment_name.split(":")[0] for node in mooncake_store_nodes) == ["10.77.0.2", "10.77.0.3"]
    assert mooncake_store.put("k", b"v" * 4096) == 0 and mooncake_store.get("k") == b"v" * 4096
    root = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ours = {str(mooncake_master.pid)} | {str(node.pid) for node in mooncake_store_nodes}
    assert not [line for line in root.splitlines() if any(f"pid={pid}," in line for pid in ours)]
"""


def test_multi_host_cluster_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_multi_host=MULTI_HOST_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mooncake-multi-host", timeout=180)
    result.assert_outcomes(passed=1)


def test_ha_masters_needs_two(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(mooncake_config): pass\n")
    result = pytester.runpytest_subprocess("--mooncake-ha-masters=1", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*high availability needs at least 2 masters*"])

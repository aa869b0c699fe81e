"""Mooncake master and store nodes: spawned locally or attached, behind one handle type each."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import port_for
import pytest

from pytest_mooncake.cluster.agent import AUTHKEY_ENV, READY_BANNER
from pytest_mooncake.cluster.agent import ENTRY as AGENT_ENTRY
from pytest_mooncake.cluster.faults import LinkFaults
from pytest_mooncake.cluster.store_client import StoreClient
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.config.parsing import HostPort
from pytest_mooncake.errors import BinaryNotFound, EndpointUnreachable, NamespaceUnavailable
from pytest_mooncake.runtime.binaries import find_binary
from pytest_mooncake.runtime.executor import ServiceProcess
from pytest_mooncake.runtime.janitor import Janitor
from pytest_mooncake.runtime.netns import LanHost, NetworkNamespace, VirtualLan
from pytest_mooncake.runtime.probes import AllOf, HTTPProbe, HttpResponse, LogBannerProbe, Probe, TCPProbe, http_request

LOOPBACK = "127.0.0.1"


@dataclass
class MasterHandle:
    """A Mooncake master, spawned by us or attached to; the same surface either way."""

    endpoint: HostPort
    metadata_url: str
    metrics_url: str
    spawned: bool
    protocol: str
    lease_ttl: float
    client_ttl: float
    netns: NetworkNamespace | None = None
    process: ServiceProcess | None = field(default=None, repr=False)
    # --mooncake-multi-host: the bridge the master and every store node hang off.
    lan: VirtualLan | None = field(default=None, repr=False)
    # --mooncake-ha-masters: the etcd and the masters; ``endpoint`` and ``process`` follow the leader.
    ha: HAGroup | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def client_address(self) -> str:
        """What store clients are given as their master: the leader's etcd under HA."""
        return self.ha.etcd_url if self.ha else str(self.endpoint)

    @property
    def log_path(self) -> Path | None:
        return self.process.log_path if self.process else None

    def admin(self, path: str, *, method: str = "GET", timeout: float = 10.0) -> HttpResponse:
        """A request to the master's admin HTTP port (``/metrics``, ``/get_all_keys``, ...)."""
        return http_request(self.metrics_url + path, method=method, timeout=timeout, netns=self.netns)

    def restart(self) -> None:
        """Stop and start a spawned master on the same ports (non-HA: its metadata is lost)."""
        if self.process is None:
            raise RuntimeError("restart() needs a master that pytest spawned; this one is attached")
        self.process.stop()
        self.process.start()

    def kill_leader(self, timeout: float = 60.0) -> float:
        """SIGKILL the HA leader, wait until a standby serves; the seconds the view change took."""
        if self.ha is None:
            raise RuntimeError("kill_leader() needs a master spawned with --mooncake-ha-masters >= 2")
        old = self.ha.leader
        old.process.kill(sig=signal.SIGKILL)
        started = time.monotonic()
        new = self.ha.wait_for_leader(exclude=old, timeout=timeout)
        self.endpoint, self.metrics_url, self.process = new.endpoint, new.metrics_url, new.process
        return time.monotonic() - started


@dataclass
class MasterProcess:
    """One spawned ``mooncake_master``: the single master, or one of an HA group."""

    endpoint: HostPort
    metrics_url: str
    process: ServiceProcess = field(repr=False)
    netns: NetworkNamespace | None = None

    def health(self) -> dict[str, object]:
        """The master's /health JSON; {} when it does not answer."""
        try:
            response = http_request(self.metrics_url + "/health", timeout=2.0, netns=self.netns)
            return dict(json.loads(response.body)) if response.status == 200 else {}
        except (OSError, ValueError):
            return {}


@dataclass
class HAGroup:
    """Masters electing a leader through one etcd (``--enable_ha --ha_backend_type=etcd``)."""

    etcd_url: str
    masters: list[MasterProcess]
    leader: MasterProcess

    def wait_for_leader(self, *, exclude: MasterProcess | None = None, timeout: float) -> MasterProcess:
        """The master that reports itself the serving leader, polled every 0.25 s up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for master in self.masters:
                if master is exclude or not master.process.running():
                    continue
                health = master.health()
                if health.get("role") == "leader" and health.get("service_ready") is True:
                    self.leader = master
                    return master
            time.sleep(0.25)
        states = {str(m.endpoint): m.health() for m in self.masters if m is not exclude}
        raise AssertionError(f"no master became the serving leader within {timeout:g} s: {states}")


@dataclass
class StoreNode:
    """A store-node process (segment_size > 0) or a pure client (0), driven over a Unix socket."""

    name: str
    segment_name: str
    segment_size: int
    client: StoreClient
    process: ServiceProcess = field(repr=False)
    # Its host on the master's VirtualLan (--mooncake-multi-host), else None.
    host: LanHost | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def link(self) -> LinkFaults:
        """Faults on this node's own link (delay, rate, loss, partition); needs multi_host."""
        if self.host is None:
            raise RuntimeError(f"{self.name} shares its namespace with the cluster: link faults need "
                               "--mooncake-multi-host (or multi_host=True on the master factory)")
        return LinkFaults(self.host)

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def kill(self) -> None:
        """SIGKILL the node: the abrupt node loss the destructive suites study."""
        self.client.close()
        self.process.kill()


def free_port(netns: NetworkNamespace | None, address: str = LOOPBACK) -> int:
    if netns is None:
        return int(port_for.select_random())
    # A fresh namespace has nothing listening; ephemeral ports stay clear of the
    # ranges Mooncake clients pick from (12300-14300, 15000-17000).
    with netns.entered():
        with socket.socket() as sock:
            sock.bind((address, 0))
            return int(sock.getsockname()[1])


def _namespace(mode: str, janitor: Janitor) -> NetworkNamespace | None:
    if mode == "off":
        return None
    try:
        netns = NetworkNamespace.create(janitor.watch_namespace)
    except NamespaceUnavailable as exc:
        if mode == "on":
            raise
        warnings.warn(
            pytest.PytestWarning(
                f"{exc}\nRunning the Mooncake cluster WITHOUT isolation: its metadata server "
                "and Transfer Engine ports listen on all interfaces of this host."
            ),
            stacklevel=2,
        )
        return None
    return netns


def _drop_namespace(netns: NetworkNamespace, janitor: Janitor) -> None:
    netns.delete()
    janitor.forget_namespace(netns.name)


def _drop_lan(lan: VirtualLan, janitor: Janitor) -> None:
    names = [netns.name for netns in lan.namespaces()]
    lan.delete()
    for name in names:
        janitor.forget_namespace(name)


def _lan(janitor: Janitor) -> VirtualLan:
    if shutil.which("ip") is None:
        raise NamespaceUnavailable(
            "--mooncake-multi-host needs the `ip` command (iproute2) and root. Fix: apt-get install iproute2")
    return VirtualLan(on_namespace=janitor.watch_namespace)


@dataclass(frozen=True)
class _MasterSite:
    """Where spawned masters (and their etcd) run; every process started here stops with ``stack``."""

    config: MooncakeConfig
    binary: Path
    workdir: Path
    janitor: Janitor
    stack: ExitStack
    netns: NetworkNamespace | None
    address: str
    lan: VirtualLan | None

    def port(self) -> int:
        return free_port(self.netns, self.address)

    def run(self, name: str, command: list[str], probe: Probe, log_name: str) -> ServiceProcess:
        process = ServiceProcess(name, command, probe, self.workdir / log_name, timeout=self.config.startup_timeout,
                                 netns=self.netns, janitor=self.janitor)
        self.stack.callback(process.stop)
        process.start()
        return process

    def master(self, name: str, flags: list[str], probe: Callable[[str, int], Probe]) -> MasterProcess:
        """Start a master on fresh RPC and metrics ports; ``probe(metrics_url, rpc_port)`` says when it is ready."""
        rpc, metrics = self.port(), self.port()
        metrics_url = f"http://{self.address}:{metrics}"
        config, address = self.config, self.address
        command = [
            str(self.binary),
            f"--rpc_address={address}",
            f"--rpc_port={rpc}",
            f"--metrics_host={address}",
            f"--metrics_port={metrics}",
            f"--default_kv_lease_ttl={round(config.lease_ttl * 1000)}",
            f"--client_ttl={max(1, round(config.client_ttl))}",
            "--logtostderr",
            *flags,
        ]
        process = self.run(name, command, probe(metrics_url, rpc), f"{name}-{rpc}.log")
        return MasterProcess(HostPort(address, rpc), metrics_url, process, self.netns)

    def handle(self, leader: MasterProcess, metadata_url: str, ha: HAGroup | None = None) -> MasterHandle:
        return MasterHandle(
            endpoint=leader.endpoint,
            metadata_url=metadata_url,
            metrics_url=leader.metrics_url,
            spawned=True,
            protocol=self.config.protocol,
            lease_ttl=self.config.lease_ttl,
            client_ttl=self.config.client_ttl,
            netns=self.netns,
            process=leader.process,
            lan=self.lan,
            ha=ha,
        )


@contextmanager
def spawned_master(config: MooncakeConfig, workdir: Path, janitor: Janitor) -> Iterator[MasterHandle]:
    """Spawn ``mooncake_master`` (with its HTTP metadata server) in a private namespace.

    With ``multi_host`` the master gets a host of its own on a :class:`VirtualLan` that each
    store node joins; with ``ha_masters`` it is that many masters and an etcd (see ``_spawn_ha``).
    """
    binary = find_binary("mooncake_master", config.master_bin, "--mooncake-master-bin")
    with ExitStack() as stack:
        lan: VirtualLan | None = None
        address = LOOPBACK
        if config.multi_host:
            lan = _lan(janitor)
            stack.callback(_drop_lan, lan, janitor)
            host = lan.add_host()
            netns, address = host.netns, host.address
        else:
            netns = _namespace(config.netns, janitor)
            if netns is not None:
                stack.callback(_drop_namespace, netns, janitor)
        site = _MasterSite(config, binary, workdir, janitor, stack, netns, address, lan)
        if config.ha_masters:
            yield _spawn_ha(site)
            return
        metadata = site.port()
        master = site.master(
            "mooncake_master",
            ["--enable_http_metadata_server=true", f"--http_metadata_server_host={address}",
             f"--http_metadata_server_port={metadata}"],
            lambda metrics_url, rpc: AllOf((
                HTTPProbe(metrics_url + "/health", body_pattern=r'"service_ready":\s*true', netns=netns),
                TCPProbe(address, rpc, netns=netns),
                TCPProbe(address, metadata, netns=netns),
            )),
        )
        yield site.handle(master, f"http://{address}:{metadata}/metadata")


def _spawn_ha(site: _MasterSite) -> MasterHandle:
    """An etcd and ``config.ha_masters`` masters electing a leader through it, on one host.

    Master 0 starts first and is the first leader. Clients find the leader through
    ``etcd://``; the Transfer Engine handshakes peer to peer (P2PHANDSHAKE), since the
    masters' embedded metadata server would die with the leader.
    """
    etcd_bin = shutil.which("etcd")
    if etcd_bin is None:
        raise BinaryNotFound("etcd", ["$PATH (etcd)"], "apt-get install etcd-server (Debian) to put etcd on $PATH")
    address, netns = site.address, site.netns
    client, peer = site.port(), site.port()
    site.run(
        "etcd",
        [etcd_bin, f"--data-dir={site.workdir / 'etcd'}", "--name=pmc",
         f"--listen-client-urls=http://{address}:{client}", f"--advertise-client-urls=http://{address}:{client}",
         f"--listen-peer-urls=http://{address}:{peer}", f"--initial-advertise-peer-urls=http://{address}:{peer}",
         f"--initial-cluster=pmc=http://{address}:{peer}"],
        HTTPProbe(f"http://{address}:{client}/health", body_pattern=r'"health":\s*"true"', netns=netns),
        "etcd.log",
    )
    ha_flags = ["--enable_ha=true", "--ha_backend_type=etcd", f"--etcd_endpoints={address}:{client}"]

    # The first master must win the election before the others start; it opens its RPC port
    # only once it leads. A standby is ready when it says so.
    def leader_ready(metrics_url: str, rpc: int) -> Probe:
        health = HTTPProbe(metrics_url + "/health", body_pattern=r'"role":\s*"leader".*"service_ready":\s*true', netns=netns)
        return AllOf((health, TCPProbe(address, rpc, netns=netns)))

    def standby_ready(metrics_url: str, rpc: int) -> Probe:
        return HTTPProbe(metrics_url + "/health", body_pattern=r'"ha_state":\s*"standby"', netns=netns)

    masters = [site.master(f"mooncake_master-ha{index}", ha_flags, standby_ready if index else leader_ready)
               for index in range(site.config.ha_masters)]
    return site.handle(masters[0], "P2PHANDSHAKE", HAGroup(f"etcd://{address}:{client}", masters, masters[0]))


def attach_probes(config: MooncakeConfig) -> list[tuple[str, Probe, str]]:
    """(what, probe, fix) for each endpoint of an attached cluster."""
    assert config.master is not None and config.metrics_url and config.metadata_url
    master = config.master
    probes: list[tuple[str, Probe, str]] = [
        (
            f"master RPC {master}",
            TCPProbe(master.host, master.port),
            "check --mooncake-master (mooncake_master --rpc_port) and that this host can reach it",
        ),
        (
            f"master metrics {config.metrics_url}",
            HTTPProbe(config.metrics_url + "/metrics", body_pattern=r"master_key_count"),
            "check --mooncake-metrics-url (mooncake_master --metrics_port, default 9003)",
        ),
    ]
    if config.metadata_url != "P2PHANDSHAKE":
        probes.append(
            (
                f"metadata server {config.metadata_url}",
                # Any answer for a key nobody wrote (404 included) proves the server is up.
                HTTPProbe(config.metadata_url + "?key=pytest_mooncake_probe", status=r"^(200|404)$"),
                "check --mooncake-metadata-url (--enable_http_metadata_server / "
                "--http_metadata_server_port on the master, or your etcd/HTTP metadata server)",
            )
        )
    return probes


@contextmanager
def attached_master(config: MooncakeConfig) -> Iterator[MasterHandle]:
    """Probe an existing master and hand it over; nothing here stops or changes it."""
    for what, probe, fix in attach_probes(config):
        result = probe.check()
        if not result.ok:
            raise EndpointUnreachable(what, probe.description, result.detail, fix)
    assert config.master is not None and config.metrics_url and config.metadata_url
    yield MasterHandle(
        endpoint=config.master,
        metadata_url=config.metadata_url,
        metrics_url=config.metrics_url,
        spawned=False,
        protocol=config.protocol,
        lease_ttl=config.lease_ttl,
        client_ttl=config.client_ttl,
    )


def advertised_host(config: MooncakeConfig, master: MasterHandle) -> str:
    if master.spawned:
        return LOOPBACK
    if config.local_hostname:
        return config.local_hostname
    # The source address the kernel picks towards the master is the one it can reach us on.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((master.endpoint.host, master.endpoint.port))
        return str(probe.getsockname()[0])


@contextmanager
def store_node(
    master: MasterHandle,
    config: MooncakeConfig,
    name: str,
    *,
    segment_size: int,
    workdir: Path,
    socket_dir: Path,
    authkey: bytes,
    janitor: Janitor,
) -> Iterator[StoreNode]:
    """Start one agent process (in the master's namespace when it has one, on a host of its
    own when the master has a VirtualLan) and connect to it."""
    with ExitStack() as stack:
        lan_host: LanHost | None = None
        netns = master.netns
        if master.lan is not None:
            lan_host = master.lan.add_host()
            stack.callback(_drop_lan_host, master.lan, lan_host, janitor)
            netns, host = lan_host.netns, lan_host.address
        else:
            host = advertised_host(config, master)
        socket_path = socket_dir / f"{name}.sock"
        log_path = workdir / f"{name}.log"
        command = [
            sys.executable,
            "-c",
            AGENT_ENTRY,
            f"--socket={socket_path}",
            f"--local-hostname={host}",
            f"--metadata-server={master.metadata_url}",
            f"--master={master.client_address}",
            f"--segment-size={segment_size}",
            f"--buffer-size={config.local_buffer_size}",
            f"--protocol={config.protocol}",
            f"--rdma-devices={config.rdma_devices}",
        ]
        process = ServiceProcess(
            name,
            command,
            LogBannerProbe(log_path, READY_BANNER),
            log_path,
            timeout=config.startup_timeout,
            env={AUTHKEY_ENV: authkey.hex(), "MC_TCP_BIND_ADDRESS": host},
            netns=netns,
            janitor=janitor,
        )
        stack.callback(process.stop)
        process.start()
        client = StoreClient(name, socket_path, authkey, timeout=config.request_timeout)
        stack.callback(client.close)
        yield StoreNode(name, client.get_hostname(), segment_size, client, process, lan_host)


def _drop_lan_host(lan: VirtualLan, host: LanHost, janitor: Janitor) -> None:
    lan.remove_host(host)
    janitor.forget_namespace(host.netns.name)

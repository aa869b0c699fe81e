"""Mooncake master and store nodes: spawned locally or attached, behind one handle type each."""

from __future__ import annotations

import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import port_for
import pytest

from .agent import AUTHKEY_ENV, READY_BANNER
from .agent import ENTRY as AGENT_ENTRY
from .binaries import find_binary
from .errors import EndpointUnreachable, NamespaceUnavailable
from .executor import ServiceProcess
from .janitor import Janitor
from .netns import NetworkNamespace
from .options import MooncakeConfig
from .parsing import Endpoint
from .probes import AllOf, HTTPProbe, HttpResponse, LogBannerProbe, Probe, TCPProbe, http_request
from .store_client import StoreClient

LOOPBACK = "127.0.0.1"


@dataclass
class MasterHandle:
    """A Mooncake master, spawned by us or attached to; the same surface either way."""

    endpoint: Endpoint
    metadata_url: str
    metrics_url: str
    spawned: bool
    protocol: str
    lease_ttl: float
    client_ttl: float
    netns: NetworkNamespace | None = None
    process: ServiceProcess | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

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


@dataclass
class StoreNode:
    """A store-node process (segment_size > 0) or a pure client (0), driven over a Unix socket."""

    name: str
    segment_name: str
    segment_size: int
    client: StoreClient
    process: ServiceProcess = field(repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def kill(self) -> None:
        """SIGKILL the node: the abrupt node loss the destructive suites study."""
        self.client.close()
        self.process.kill()


def free_port(netns: NetworkNamespace | None) -> int:
    if netns is None:
        return int(port_for.select_random())
    # A fresh namespace has nothing listening; ephemeral ports stay clear of the
    # ranges Mooncake clients pick from (12300-14300, 15000-17000).
    with netns.entered():
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            return int(sock.getsockname()[1])


def _namespace(mode: str, janitor: Janitor) -> NetworkNamespace | None:
    if mode == "off":
        return None
    try:
        netns = NetworkNamespace.create()
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
    janitor.watch_namespace(netns.name)
    return netns


def _drop_namespace(netns: NetworkNamespace, janitor: Janitor) -> None:
    netns.delete()
    janitor.forget_namespace(netns.name)


@contextmanager
def spawned_master(config: MooncakeConfig, workdir: Path, janitor: Janitor) -> Iterator[MasterHandle]:
    """Spawn ``mooncake_master`` (with its HTTP metadata server) in a private namespace."""
    binary = find_binary("mooncake_master", config.master_bin, "--mooncake-master-bin")
    with ExitStack() as stack:
        netns = _namespace(config.netns, janitor)
        if netns is not None:
            stack.callback(_drop_namespace, netns, janitor)
        rpc, metrics, metadata = (free_port(netns) for _ in range(3))
        command = [
            str(binary),
            f"--rpc_address={LOOPBACK}",
            f"--rpc_port={rpc}",
            f"--metrics_host={LOOPBACK}",
            f"--metrics_port={metrics}",
            "--enable_http_metadata_server=true",
            f"--http_metadata_server_host={LOOPBACK}",
            f"--http_metadata_server_port={metadata}",
            f"--default_kv_lease_ttl={round(config.lease_ttl * 1000)}",
            f"--client_ttl={max(1, round(config.client_ttl))}",
            "--logtostderr",
        ]
        metrics_url = f"http://{LOOPBACK}:{metrics}"
        probe = AllOf(
            (
                HTTPProbe(metrics_url + "/health", body_pattern=r'"service_ready":\s*true', netns=netns),
                TCPProbe(LOOPBACK, rpc, netns=netns),
                TCPProbe(LOOPBACK, metadata, netns=netns),
            )
        )
        process = ServiceProcess(
            "mooncake_master",
            command,
            probe,
            workdir / f"mooncake_master-{rpc}.log",
            timeout=config.startup_timeout,
            netns=netns,
            janitor=janitor,
        )
        stack.callback(process.stop)
        process.start()
        yield MasterHandle(
            endpoint=Endpoint(LOOPBACK, rpc),
            metadata_url=f"http://{LOOPBACK}:{metadata}/metadata",
            metrics_url=metrics_url,
            spawned=True,
            protocol=config.protocol,
            lease_ttl=config.lease_ttl,
            client_ttl=config.client_ttl,
            netns=netns,
            process=process,
        )


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
    """Start one agent process (in the master's namespace when it has one) and connect to it."""
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
        f"--master={master.endpoint}",
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
        netns=master.netns,
        janitor=janitor,
    )
    with ExitStack() as stack:
        stack.callback(process.stop)
        process.start()
        client = StoreClient(name, socket_path, authkey, timeout=config.request_timeout)
        stack.callback(client.close)
        yield StoreNode(name, client.get_hostname(), segment_size, client, process)

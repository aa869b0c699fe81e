"""Private network namespaces for spawned Mooncake processes.

Mooncake binds every interface whatever its flags say (the embedded metadata
server, each client's Transfer Engine RPC and TCP data ports), so the only way
to keep a spawned cluster off the host's network is to run it in a namespace
that has nothing but ``lo``. pytest itself stays in the root namespace and
reaches the cluster through sockets it creates inside the namespace.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pytest_mooncake.errors import NamespaceUnavailable

_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT_S = 10
NAME_PREFIX = "pmc-"


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False
    )


class NetworkNamespace:
    """A named namespace (``ip netns``) holding only a loopback interface."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"NetworkNamespace({self.name!r})"

    @classmethod
    def create(cls, watch: Callable[[str], None] = lambda name: None) -> NetworkNamespace:
        """A new namespace with its loopback up. ``watch`` gets the name before the namespace
        exists, so an interrupt at any point leaves it to the janitor, never to chance."""
        name = f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
        watch(name)
        try:
            added = _ip("netns", "add", name)
        except FileNotFoundError:
            raise NamespaceUnavailable(
                "Cannot isolate the spawned cluster: the `ip` command (iproute2) is missing.\n"
                "Fix: apt-get install iproute2, or run with --mooncake-netns=off "
                "(Mooncake then listens on all interfaces of this host)."
            ) from None
        if added.returncode != 0:
            raise NamespaceUnavailable(
                f"Cannot create network namespace {name}: {added.stderr.strip()}\n"
                "Fix: run as root or with CAP_SYS_ADMIN, or run with --mooncake-netns=off "
                "(Mooncake then listens on all interfaces of this host)."
            )
        namespace = cls(name)
        link = _ip("-n", name, "link", "set", "lo", "up")
        if link.returncode != 0:
            namespace.delete()
            raise NamespaceUnavailable(
                f"Created {name} but could not bring up its loopback: {link.stderr.strip()}"
            )
        return namespace

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` inside this namespace (``ip`` execs it)."""
        return ["ip", "netns", "exec", self.name, *argv]

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Switch the calling thread into the namespace; sockets made here stay in it."""
        with open("/proc/thread-self/ns/net", "rb") as home, open(
            f"/var/run/netns/{self.name}", "rb"
        ) as target:
            _libc_setns(target.fileno())
            try:
                yield
            finally:
                _libc_setns(home.fileno())

    def delete(self) -> None:
        _ip("netns", "delete", self.name)


LAN_SUBNET = "10.77.0"  # every LAN lives in namespaces of its own, so every run may reuse it
LAN_IFACE = NAME_PREFIX + "eth0"
_BRIDGE = NAME_PREFIX + "br0"


def _must(what: str, done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise NamespaceUnavailable(f"{what} failed: {done.stderr.strip()}")


class LanHost:
    """One "host" of a :class:`VirtualLan`: its own namespace, one veth into the bridge."""

    def __init__(self, netns: NetworkNamespace, address: str, port: str, switch: NetworkNamespace) -> None:
        self.netns = netns
        self.address = address
        # The switch-side end of this host's veth pair: cutting or shaping it hits this host only.
        self.port = port
        self.switch = switch

    def __repr__(self) -> str:
        return f"LanHost({self.address} in {self.netns.name}, port {self.port})"


class VirtualLan:
    """Several hosts on one machine: a bridge in a switch namespace, a veth pair per host.

    Every interface lives inside a namespace this class created (``pmc-br0`` and ``pmc-vN``
    in the switch, ``pmc-eth0`` in each host), so deleting the namespaces removes them all:
    nothing touches the root namespace, and the janitor's namespace cleanup covers them.
    ``on_namespace`` is told each namespace's name before it exists (the janitor's watch).
    """

    def __init__(self, on_namespace: Callable[[str], None] = lambda name: None) -> None:
        self._on_namespace = on_namespace
        self.switch = self._namespace()
        self.hosts: list[LanHost] = []
        try:
            _must(f"bridge {_BRIDGE} in {self.switch.name}",
                  _ip("-n", self.switch.name, "link", "add", _BRIDGE, "type", "bridge"))
            _must(f"bringing up {_BRIDGE}", _ip("-n", self.switch.name, "link", "set", _BRIDGE, "up"))
        except NamespaceUnavailable:
            self.switch.delete()
            raise

    def _namespace(self) -> NetworkNamespace:
        return NetworkNamespace.create(self._on_namespace)

    def add_host(self) -> LanHost:
        """A new namespace joined to the bridge, with the next address of the subnet."""
        index = len(self.hosts) + 1
        if index > 250:
            raise NamespaceUnavailable(f"a VirtualLan holds at most 250 hosts ({LAN_SUBNET}.1-250)")
        netns = self._namespace()
        port, address = f"{NAME_PREFIX}v{index}", f"{LAN_SUBNET}.{index}"
        sw = self.switch.name
        steps = [
            ("veth pair", ("-n", sw, "link", "add", port, "type", "veth", "peer", "name", LAN_IFACE, "netns", netns.name)),
            ("bridge port", ("-n", sw, "link", "set", port, "master", _BRIDGE, "up")),
            ("host address", ("-n", netns.name, "addr", "add", f"{address}/24", "dev", LAN_IFACE)),
            ("host link", ("-n", netns.name, "link", "set", LAN_IFACE, "up")),
        ]
        for what, args in steps:
            _must(f"{what} of {address} ({netns.name})", _ip(*args))
        host = LanHost(netns, address, port, self.switch)
        self.hosts.append(host)
        return host

    def remove_host(self, host: LanHost) -> None:
        host.netns.delete()  # takes its veth pair with it
        self.hosts.remove(host)

    def namespaces(self) -> list[NetworkNamespace]:
        return [self.switch, *(host.netns for host in self.hosts)]

    def delete(self) -> None:
        for host in list(self.hosts):
            self.remove_host(host)
        self.switch.delete()

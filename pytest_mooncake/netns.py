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
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import NamespaceUnavailable

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
    def create(cls) -> NetworkNamespace:
        name = f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
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

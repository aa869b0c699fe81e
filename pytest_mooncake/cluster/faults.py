"""Faults on one host's link of a :class:`~pytest_mooncake.runtime.netns.VirtualLan`.

Each fault has one mechanism, applied at both ends of the host's veth pair (the switch
port shapes traffic towards the host, the host's ``pmc-eth0`` traffic from it):

- ``delay``: ``tc netem`` (needs the kernel's sch_netem);
- ``rate``: ``tc tbf``, a token bucket (sch_tbf), the same cap netem's ``rate`` gives;
- ``loss``: an nftables rule in the host's namespace dropping a random share of packets
  (nftables is in every distribution kernel; netem's loss is not always);
- ``partition``: the switch port goes down, so nothing crosses the link either way.

``heal()`` undoes all of them. Everything happens inside namespaces the run created.
"""

from __future__ import annotations

import shutil
import subprocess

from pytest_mooncake.errors import MooncakeError
from pytest_mooncake.runtime.netns import LAN_IFACE, LanHost

__all__ = ["LinkFaultUnsupported"]

_TIMEOUT_S = 10
_NFT_TABLE = "pmc_faults"


class LinkFaultUnsupported(MooncakeError):
    """This kernel or host lacks what a fault needs; the message is one line, with the fix."""


def _run(argv: list[str], what: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if done.returncode == 0:
        return
    error = done.stderr.strip().replace("\n", " ")
    if "qdisc kind is unknown" in error:
        raise LinkFaultUnsupported(
            f"{what}: this kernel has no {argv[argv.index('root') + 1]} qdisc ({error}); "
            "fix: load it (modprobe sch_netem / sch_tbf) or use a kernel built with it")
    raise MooncakeError(f"{what} failed: {' '.join(argv)}: {error}")


class LinkFaults:
    """Delay, rate cap, loss and partition of one host's link; ``heal()`` removes them."""

    def __init__(self, host: LanHost) -> None:
        self.host = host
        # (namespace, device) of both ends of the host's veth pair.
        self._ends = ((host.switch.name, host.port), (host.netns.name, LAN_IFACE))

    def _qdisc(self, spec: list[str], what: str) -> None:
        for netns, device in self._ends:
            _run(["tc", "-n", netns, "qdisc", "replace", "dev", device, "root", *spec], f"{what} on {device} in {netns}")

    def delay(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Add ``ms`` each way (so ``2 x ms`` to every round trip)."""
        jitter = [f"{jitter_ms:g}ms"] if jitter_ms else []
        self._qdisc(["netem", "delay", f"{ms:g}ms", *jitter], f"delay {ms:g} ms")

    def rate(self, bytes_per_s: int) -> None:
        """Cap the link at ``bytes_per_s`` each way; excess waits in a 2 s queue, then drops."""
        burst = max(bytes_per_s // 100, 16 * 1024)
        self._qdisc(["tbf", "rate", f"{bytes_per_s * 8}bit", "burst", str(burst), "latency", "2s"],
                    f"rate cap {bytes_per_s} B/s")

    def loss(self, percent: float) -> None:
        """Drop ``percent`` % of the packets each way, at random."""
        if shutil.which("nft") is None:
            raise LinkFaultUnsupported("packet loss needs nftables: apt-get install nftables")
        share = round(percent * 100)  # out of 10,000
        rules = (f"table inet {_NFT_TABLE} {{\n"
                 f"  chain in {{ type filter hook input priority 0; iifname \"{LAN_IFACE}\" numgen random mod 10000 < {share} drop; }}\n"
                 f"  chain out {{ type filter hook output priority 0; oifname \"{LAN_IFACE}\" numgen random mod 10000 < {share} drop; }}\n"
                 "}\n")
        _run(["ip", "netns", "exec", self.host.netns.name, "nft", "-f", "-"], f"loss {percent:g}%", stdin=rules)

    def partition(self) -> None:
        """Cut the link: the host can reach nobody and nobody can reach it."""
        _run(["ip", "-n", self.host.switch.name, "link", "set", self.host.port, "down"], f"partition of {self.host.address}")

    def heal(self) -> None:
        """Undo every fault: link up, no qdisc, no drop rule (each step a no-op when absent)."""
        _run(["ip", "-n", self.host.switch.name, "link", "set", self.host.port, "up"], f"healing {self.host.address}")
        for netns, device in self._ends:
            subprocess.run(["tc", "-n", netns, "qdisc", "del", "dev", device, "root"],
                           capture_output=True, timeout=_TIMEOUT_S, check=False)
        if shutil.which("nft") is not None:
            subprocess.run(["ip", "netns", "exec", self.host.netns.name, "nft", "delete", "table", "inet", _NFT_TABLE],
                           capture_output=True, timeout=_TIMEOUT_S, check=False)

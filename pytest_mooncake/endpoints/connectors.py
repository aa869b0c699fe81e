"""Configs for the KV connectors that put vLLM's cache into Mooncake, generated from our settings.

Topologies (guides 001 and 002, and vLLM's own docs):

- ``lmcache``: vLLM + ``LMCacheConnectorV1`` with ``remote_url: mooncakestore://``;
- ``mooncake-store``: vLLM's built-in ``MooncakeStoreConnector`` (``MOONCAKE_CONFIG_PATH``), also
  as producer/consumer of prefill/decode disaggregation through the store;
- ``pd``: prefill/decode disaggregation with ``MooncakeConnector`` (producer/consumer + proxy);
- ``tiered``: ``MooncakeStoreConnector`` with vLLM's own prefix cache kept on, as production runs it:
  local hits first, Mooncake for the blocks after them;
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
SETUPS = ("lmcache", "mooncake-store", "tiered", "pd", "baseline", "prefix-cache")


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
    connector = {"lmcache": "LMCacheConnectorV1", "mooncake-store": "MooncakeStoreConnector",
                 "tiered": "MooncakeStoreConnector", "pd": "MooncakeConnector"}[topology]
    if topology in ("lmcache", "tiered") and role != "kv_both":
        raise ValueError(f"{topology} runs as kv_both; mooncake-store and pd take kv_producer/kv_consumer")
    # vLLM's default kv_load_failure_policy "fail" turns a lost store node into failed requests
    # (measured: "Failing 1 request(s) due to KV load failure"); "recompute" serves them anyway.
    transfer = {"kv_connector": connector, "kv_role": role, "kv_load_failure_policy": "recompute"}
    # Elsewhere external KV must be the only cache under test, so vLLM's own prefix cache is off;
    # tiered measures the two tiers together.
    caching = "--enable-prefix-caching" if topology == "tiered" else "--no-enable-prefix-caching"
    return [caching, "--kv-transfer-config", json.dumps(transfer)]


# Connectors whose KV lands in the master's pool, so that its key count proves the wiring;
# MooncakeConnector hands KV from prefiller to decoder directly.
POOL_CONNECTORS = frozenset({"MooncakeStoreConnector", "LMCacheConnectorV1"})

# Why a connector's KV does not reach Mooncake, per connector: the one list the wiring check
# (endpoints/preflight.py) and the doctor both tell, so a message never names another
# topology's causes.
_NOT_WIRED: dict[str, tuple[str, ...]] = {
    "MooncakeStoreConnector": (
        "the instance was started without --kv-transfer-config "
        "'{\"kv_connector\":\"MooncakeStoreConnector\",\"kv_role\":\"kv_both\"}': it serves every request itself and "
        "stores nothing",
        "the instance's environment has no MOONCAKE_CONFIG_PATH naming its Mooncake JSON config",
        "the master_server_address in that config is not {master}, or the instance cannot reach it (a wrong port, or a "
        "host address in MC_TCP_BIND_ADDRESS / VLLM_HOST_IP the master cannot reach): its log then shows "
        "'Client not available'",
    ),
    "LMCacheConnectorV1": (
        "LMCache's extra_config keys do not match what the installed Mooncake store reads (add "
        "mooncake_master_server_addr and mooncake_rdma_devices beside master_server_address/device_name); its log "
        "then shows 'Client not available' and 'Retrieved 0 out of'",
        "Mooncake's local_buffer_size or LMCache's max_local_cpu_size is smaller than the prompt's KV",
        "the instance was started without --kv-transfer-config '{\"kv_connector\":\"LMCacheConnectorV1\",...}' or "
        "without LMCACHE_CONFIG_FILE (remote_url mooncakestore://{master}/)",
    ),
    "MooncakeConnector": (
        "the instances were started without --kv-transfer-config '{\"kv_connector\":\"MooncakeConnector\","
        "\"kv_role\":\"kv_producer\"}' on the prefiller and kv_role kv_consumer on the decoder",
        "the proxy in front of them does not speak vLLM's transfer_id protocol (transfer_id, remote_bootstrap_addr, "
        "remote_engine_id)",
        "the decoder cannot reach the prefiller's bootstrap port (VLLM_MOONCAKE_BOOTSTRAP_PORT, default 8998)",
    ),
}


def not_wired_causes(connector: str, master: str | None = None) -> str:
    """The likely causes, for ``connector``, of KV that never reaches Mooncake (``master``: HOST:PORT
    of the master this run watches)."""
    causes = _NOT_WIRED.get(connector)
    if causes is None:
        raise ValueError(f"unknown connector {connector!r}; known: {', '.join(_NOT_WIRED)}")
    where = master or "the master this run watches"
    listed = "; ".join(f"({n}) {cause.replace('{master}', where)}" for n, cause in enumerate(causes, 1))
    return f"Likely causes for {connector}: {listed}."


def unreachable_fix(connector: str | None) -> str:
    """How to fix an OpenAI endpoint that does not answer, on a topology with ``connector``."""
    fix = "check the URL (it ends in /v1), --mooncake-api-key and that the server is up"
    if connector != "MooncakeStoreConnector":
        return fix
    # Measured: a vLLM whose Mooncake config named a wrong master port retried for ~115 s, then exited.
    return (f"{fix}. A vLLM with {connector} exits about two minutes after start-up when the master in its Mooncake "
            "config does not answer: compare master_server_address and metadata_server in the file its "
            "MOONCAKE_CONFIG_PATH names with --mooncake-master / --mooncake-metadata-url, and look for "
            "'Client not available' in the instance's log")

"""Connector configs from our settings, and the preflight that exposes a cache that is not wired."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pytest_mooncake.endpoints.connectors import (
    StoreTarget,
    lmcache_config,
    mooncake_store_connector_config,
    store_setup_keys,
    vllm_args,
)
from pytest_mooncake.endpoints.preflight import CacheNotWired, check_cache_wired
from pytest_mooncake.endpoints.server import Endpoint

TARGET = StoreTarget(master="10.0.0.5:50052", metadata_server="http://10.0.0.5:8080/metadata", local_hostname="10.0.0.6",
                     protocol="rdma", rdma_devices="mlx5_0")


def test_installed_store_setup_keys_are_read_from_the_wheel() -> None:
    pytest.importorskip("mooncake.store")
    keys = store_setup_keys()
    assert {"local_hostname", "metadata_server", "master_server_addr", "rdma_devices"} <= keys


def test_lmcache_config_adds_the_keys_the_store_reads() -> None:
    config = lmcache_config(TARGET, setup_keys=frozenset({"master_server_addr", "rdma_devices"}))
    extra = config["extra_config"]
    assert config["remote_url"] == "mooncakestore://10.0.0.5:50052/"
    assert extra["master_server_address"] == extra["mooncake_master_server_addr"] == "10.0.0.5:50052"
    assert extra["device_name"] == extra["mooncake_rdma_devices"] == "mlx5_0"
    assert extra["save_chunk_meta"] is False


def test_lmcache_config_for_a_store_with_the_old_key_names() -> None:
    extra = lmcache_config(TARGET, setup_keys=frozenset({"master_server_address", "device_name"}))["extra_config"]
    assert "mooncake_master_server_addr" not in extra and "mooncake_rdma_devices" not in extra


def test_store_connector_json_and_vllm_flags() -> None:
    # The keys vLLM's MooncakeStoreConfig.from_file reads; a segment of 0 means the KV lives in the store nodes.
    standalone = mooncake_store_connector_config(dataclasses.replace(TARGET, global_segment_size=0))
    assert standalone == {"mode": "standalone-store", "metadata_server": TARGET.metadata_server,
                          "master_server_address": "10.0.0.5:50052", "global_segment_size": 0,
                          "local_buffer_size": TARGET.local_buffer_size, "protocol": TARGET.protocol,
                          "device_name": TARGET.rdma_devices}
    assert mooncake_store_connector_config(TARGET)["mode"] == "embedded"
    args = vllm_args("mooncake-store")
    assert args[0] == "--no-enable-prefix-caching"
    assert json.loads(args[args.index("--kv-transfer-config") + 1]) == {
        "kv_connector": "MooncakeStoreConnector", "kv_role": "kv_both", "kv_load_failure_policy": "recompute"}
    assert vllm_args("baseline") == ["--no-enable-prefix-caching"]
    assert json.loads(vllm_args("pd", "kv_producer")[-1])["kv_role"] == "kv_producer"
    assert json.loads(vllm_args("mooncake-store", "kv_consumer")[-1])["kv_role"] == "kv_consumer"
    with pytest.raises(ValueError, match="lmcache runs as kv_both"):
        vllm_args("lmcache", "kv_producer")
    # tiered keeps vLLM's own prefix cache in front of the store connector.
    tiered = vllm_args("tiered")
    assert tiered[0] == "--enable-prefix-caching"
    assert json.loads(tiered[-1])["kv_connector"] == "MooncakeStoreConnector"
    with pytest.raises(ValueError, match="tiered runs as kv_both"):
        vllm_args("tiered", "kv_consumer")
    with pytest.raises(ValueError, match="valid: lmcache, mooncake-store, tiered, pd, baseline, prefix-cache"):
        vllm_args("nixl")


class _FakeCompletions(BaseHTTPRequestHandler):
    """Test double of an OpenAI endpoint: answers 200 with ``completion_tokens`` tokens."""

    completion_tokens = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"text": ""}], "usage": {"prompt_tokens": 8, "completion_tokens": self.completion_tokens}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    handler = type("Handler", (_FakeCompletions,), {"completion_tokens": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Endpoint(f"http://127.0.0.1:{server.server_address[1]}/v1", "fake", spawned=False, label="fake")
    server.shutdown()


@pytest.mark.parametrize("fake_endpoint", [0], indirect=True)
def test_zero_token_answers_are_a_clear_error(fake_endpoint: Endpoint) -> None:
    with pytest.raises(CacheNotWired, match=r"HTTP 200 and 0 completion tokens.*fake speed-up.*mooncake_master_server_addr"):
        check_cache_wired(fake_endpoint, list(range(8)), connector="LMCacheConnectorV1")


@pytest.mark.parametrize("fake_endpoint", [2], indirect=True)
def test_a_store_that_receives_no_keys_is_a_clear_error(fake_endpoint: Endpoint) -> None:
    with pytest.raises(CacheNotWired, match="master_key_count stayed at 0 for 1 s.*Likely causes for MooncakeStoreConnector"):
        check_cache_wired(fake_endpoint, list(range(8)), connector="MooncakeStoreConnector", key_count=lambda: 0.0,
                          settle_timeout=1.0)


@pytest.mark.parametrize("fake_endpoint", [2], indirect=True)
def test_a_wired_cache_passes(fake_endpoint: Endpoint) -> None:
    counts = iter([0.0, 0.0, 3.0, 3.0])
    grew = check_cache_wired(fake_endpoint, list(range(8)), connector="MooncakeStoreConnector",
                             key_count=lambda: next(counts), settle_timeout=10.0)
    assert grew == 3.0
    assert list(counts) == [], "the count is read before the request, then until it rises, then once for the growth"
    assert check_cache_wired(fake_endpoint, list(range(8)), connector="MooncakeStoreConnector") is None

"""Is the KV cache really wired to Mooncake? Checked before anything is measured.

A misconfigured LMCache -> Mooncake setup answers every request with HTTP 200, zero
completion tokens and a tiny "TTFT": a spectacular fake speed-up. So before measuring we
send one cold request and demand at least one completion token, and, when the store is
visible to us, that the master's key count grows.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.errors import MooncakeError
from pytest_mooncake.runtime.probes import wait_for

_LIKELY_CAUSES = (
    "Likely causes: (1) LMCache's extra_config keys do not match what the installed Mooncake store reads "
    "(add mooncake_master_server_addr and mooncake_rdma_devices beside master_server_address/device_name); "
    "(2) Mooncake's local_buffer_size or LMCache's max_local_cpu_size is smaller than the prompt's KV; "
    "(3) the server was started without --kv-transfer-config / LMCACHE_CONFIG_FILE / MOONCAKE_CONFIG_PATH. "
    "See the server log for 'Retrieved 0 out of' or 'Client not available'."
)


class CacheNotWired(MooncakeError):
    """The endpoint answers, but its KV cache does not reach Mooncake."""


def _complete(endpoint: Endpoint, prompt: list[int], max_tokens: int, timeout: float) -> dict[str, int]:
    payload: dict[str, object] = {"model": endpoint.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if endpoint.dummy_weights:
        # Our dummy-weight model may pick EOS first; an empty answer must mean a broken server.
        payload["min_tokens"] = 1
    try:
        response = endpoint.post_json(endpoint.base_url + "/completions", payload, timeout)
    except OSError as exc:
        raise CacheNotWired(f"{endpoint.base_url}/completions did not answer: {exc}") from None
    if response.status != 200:
        raise CacheNotWired(f"{endpoint.base_url}/completions answered HTTP {response.status}: {response.body[:300]}")
    return dict(json.loads(response.body).get("usage") or {})


def check_cache_wired(
    endpoint: Endpoint,
    prompt: list[int],
    *,
    key_count: Callable[[], float] | None = None,
    settle_timeout: float = 30.0,
    request_timeout: float = 300.0,
) -> None:
    """Raise CacheNotWired unless a cold request yields tokens and (if visible) new store keys."""
    before = key_count() if key_count else None
    usage = _complete(endpoint, prompt, max_tokens=2, timeout=request_timeout)
    if int(usage.get("completion_tokens") or 0) < 1:
        raise CacheNotWired(
            f"{endpoint.base_url} answered a {len(prompt)}-token cold request with HTTP 200 and "
            f"{usage.get('completion_tokens', 0)} completion tokens (usage: {usage}); measuring TTFT now would "
            f"report a fake speed-up. {_LIKELY_CAUSES}"
        )
    if key_count is None or before is None:
        return
    # Connectors save KV in the background; give the store time to receive it.
    try:
        wait_for(lambda: key_count() > before, settle_timeout, "new keys in the Mooncake master", interval=0.5)
    except AssertionError:
        raise CacheNotWired(
            f"after a {len(prompt)}-token cold request the Mooncake master's master_key_count stayed at {before:g} "
            f"for {settle_timeout:g} s: the connector stores nothing in Mooncake. {_LIKELY_CAUSES}"
        ) from None

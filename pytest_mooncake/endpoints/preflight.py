"""Is the KV cache really wired to Mooncake? Checked before anything is measured.

A misconfigured LMCache -> Mooncake setup answers every request with HTTP 200, zero
completion tokens and a tiny "TTFT": a spectacular fake speed-up. So before measuring we
send one cold request and demand at least one completion token, and, when the store is
visible to us, that the master's key count grows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from pytest_mooncake.endpoints.connectors import not_wired_causes
from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.errors import MooncakeError
from pytest_mooncake.runtime.probes import wait_for


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


def cold_prompt(seed: str) -> list[int]:
    """Token ids every vocabulary has, unique to ``seed``: a cold prompt of four whole KV blocks and a tail."""
    rng = random.Random(seed)
    return [rng.randrange(100, 1000) for _ in range(4 * KV_BLOCK_TOKENS + 7)]


# How long a connector may take to save a cold request's KV in the background.
SETTLE_TIMEOUT_S = 30.0


def check_cache_wired(
    endpoint: Endpoint,
    prompt: list[int],
    *,
    connector: str,
    master: str | None = None,
    key_count: Callable[[], float] | None = None,
    counted: str = "the Mooncake master's master_key_count",
    settle_timeout: float | None = None,
    request_timeout: float = 300.0,
) -> float | None:
    """Raise CacheNotWired unless a cold request yields tokens and (if visible) ``key_count`` grows;
    return the growth seen, None when nothing was watched.

    ``connector`` picks the likely causes the error lists; ``master`` (HOST:PORT) is the master
    the run watches; ``counted`` names what ``key_count`` reads."""
    settle_timeout = SETTLE_TIMEOUT_S if settle_timeout is None else settle_timeout
    causes = not_wired_causes(connector, master)
    before = key_count() if key_count else None
    usage = _complete(endpoint, prompt, max_tokens=2, timeout=request_timeout)
    if int(usage.get("completion_tokens") or 0) < 1:
        raise CacheNotWired(
            f"{endpoint.base_url} answered a {len(prompt)}-token cold request with HTTP 200 and "
            f"{usage.get('completion_tokens', 0)} completion tokens (usage: {usage}); measuring TTFT now would "
            f"report a fake speed-up. {causes}"
        )
    if key_count is None or before is None:
        return None
    # Connectors save KV in the background; give the store time to receive it.
    try:
        wait_for(lambda: key_count() > before, settle_timeout, f"{counted} to grow", interval=0.5)
    except AssertionError:
        raise CacheNotWired(
            f"after a {len(prompt)}-token cold request {counted} stayed at {before:g} for {settle_timeout:g} s: the "
            f"connector stores nothing in Mooncake. {causes}"
        ) from None
    return key_count() - before

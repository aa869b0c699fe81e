"""Agent operations the suites run next to the store (no per-call socket round trip)."""

from __future__ import annotations

import time
from typing import Any

from .agent import op, replicate_config
from .integrity import Checker, value_for

NO_AVAILABLE_HANDLE = -200


@op
def fill(store: Any, prefix: str, count: int, size: int, config: dict[str, Any] | None = None,
         pace_s: float = 0.0, retries: int = 50) -> dict[str, int]:
    """Put ``count`` checksummed objects ``prefix-0..count-1``.

    -200 (store full, eviction still pending) is back-pressure: retried with a growing pause
    up to ``retries`` times, counted, never taken for corruption. ``failed`` counts puts
    that still did not succeed; ``last_error`` is the code of the last one.
    """
    replicate = replicate_config(config or {})
    stats = {"ok": 0, "backpressure": 0, "failed": 0, "last_error": 0}
    for index in range(count):
        key = f"{prefix}-{index}"
        value = value_for(key, size)
        for attempt in range(retries):
            code = store.put(key, value, replicate)
            if code != NO_AVAILABLE_HANDLE:
                break
            stats["backpressure"] += 1
            time.sleep(min(0.2, 0.005 * (attempt + 1)))
        if code == 0:
            stats["ok"] += 1
        else:
            stats["failed"] += 1
            stats["last_error"] = code
        if pace_s:
            time.sleep(pace_s)
    return stats


@op
def verify(store: Any, prefix: str, count: int, size: int) -> dict[str, int]:
    """Read back every object of ``fill``: exact, clean miss, or bad (stale/phantom/corrupt)."""
    checker = Checker(eviction_possible=True)
    for index in range(count):
        checker.wrote(f"{prefix}-{index}", size)
    for index in range(count):
        checker.check(f"{prefix}-{index}", bytes(store.get(f"{prefix}-{index}")))
    return dict(checker.tally)


@op
def read_while(store: Any, prefixes: list[str], count: int, size: int, seconds: float) -> dict[str, int]:
    """Read the objects ``fill`` writes under ``prefixes`` round after round for ``seconds``,
    while other processes are still writing them: a key not written yet is a clean miss,
    anything but the exact bytes or ``b''`` is a fault."""
    checker = Checker(eviction_possible=True)
    keys = [f"{prefix}-{index}" for prefix in prefixes for index in range(count)]
    for key in keys:
        checker.wrote(key, size)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key in keys:
            checker.check(key, bytes(store.get(key)))
    return dict(checker.tally)


@op
def put_get_throughput(store: Any, prefix: str, count: int, size: int) -> dict[str, float]:
    """Bytes/s of ``count`` puts then gets of ``size``-byte objects, timed inside the client
    process; every read is checked against what was written, then the objects are removed."""
    keys = [f"{prefix}-{i}" for i in range(count)]
    values = [value_for(key, size) for key in keys]
    started = time.perf_counter()
    codes = [store.put(key, value) for key, value in zip(keys, values, strict=True)]
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    reads = [store.get(key) for key in keys]
    get_s = time.perf_counter() - started
    exact = sum(bytes(read) == value for read, value in zip(reads, values, strict=True))
    store.batch_remove(keys, True)
    return {"put_gbps": count * size / put_s / 1e9, "get_gbps": count * size / get_s / 1e9,
            "put_failures": sum(code != 0 for code in codes), "exact_reads": exact}


@op
def get_into(store: Any, key: str, size: int) -> tuple[int, bytes]:
    """Zero-copy read into a registered buffer: (store return code, the bytes it read)."""
    import ctypes

    buffer = ctypes.create_string_buffer(size)
    address = ctypes.addressof(buffer)
    if (code := store.register_buffer(address, size)) != 0:
        return code, b""
    try:
        read = store.get_into(key, address, size)
        return read, buffer.raw[: max(read, 0)]
    finally:
        store.unregister_buffer(address)

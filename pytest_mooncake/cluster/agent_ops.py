"""Agent operations the suites run next to the store (no per-call socket round trip).

The registry (``OPS``, ``op``) lives here with the operations: ``agent`` serves them and
imports this module, never the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_mooncake.cluster.integrity import Checker, value_for

NO_AVAILABLE_HANDLE = -200

OPS: dict[str, Callable[..., Any]] = {}


def op(func: Callable[..., Any]) -> Callable[..., Any]:
    """Register an agent operation; it receives the store as its first argument."""
    OPS[func.__name__] = func
    return func


@op
def ping(store: Any) -> str:
    return "pong"


@op
def replica_endpoints(store: Any, key: str) -> list[str]:
    """Transport endpoint (segment name) of each replica of ``key``."""
    return [
        desc.get_memory_descriptor().buffer_descriptor.transport_endpoint
        for desc in store.get_replica_desc(key)
        if desc.is_memory_replica()
    ]


def replicate_config(spec: dict[str, Any]) -> Any:
    """A ``ReplicateConfig`` from a plain dict (which crosses the socket)."""
    from mooncake.store import ReplicateConfig, SoftPinAction

    config = ReplicateConfig()
    for key, value in spec.items():
        if key == "soft_pin_action":
            value = getattr(SoftPinAction, str(value).upper())
        setattr(config, key, value)
    return config


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


class _Registered:
    """One page-aligned buffer registered with the store for zero-copy ops, kept per size."""

    def __init__(self, store: Any, size: int) -> None:
        import ctypes
        import mmap

        self.memory = mmap.mmap(-1, size)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))
        self.size = size
        if (code := store.register_buffer(self.address, size)) != 0:
            raise RuntimeError(f"register_buffer of {size} B returned {code}")


_BUFFERS: dict[tuple[str, int], _Registered] = {}


def _buffer(store: Any, name: str, size: int) -> _Registered:
    """The registered buffer ``name`` of ``size`` bytes, allocated on first use, then reused,
    as a KV connector registers its pool once; never unregistered while the store lives."""
    if (name, size) not in _BUFFERS:
        _BUFFERS[name, size] = _Registered(store, size)
    return _BUFFERS[name, size]


def _slots(buffer: _Registered, count: int, size: int) -> list[int]:
    return [buffer.address + index * size for index in range(count)]


def _stage(buffer: _Registered, keys: list[str], size: int) -> None:
    for index, key in enumerate(keys):
        buffer.memory[index * size:(index + 1) * size] = value_for(key, size)


def _exact(buffer: _Registered, keys: list[str], size: int) -> int:
    return sum(buffer.memory[i * size:(i + 1) * size] == value_for(key, size) for i, key in enumerate(keys))


@op
def zero_copy_throughput(store: Any, prefix: str, size: int, batch: int, threads: int, seconds: float,
                         put_rounds: int = 2) -> dict[str, float]:
    """The KV connectors' path: ``batch_put_from`` / ``batch_get_into`` on registered buffers.

    Each of ``threads`` threads owns ``batch`` keys and a registered buffer of ``batch x size``
    bytes. Puts: ``put_rounds`` timed batches per thread, each of fresh keys (earlier rounds
    removed untimed, so the pool holds one round). Gets: every thread re-reads its batch for
    ``seconds`` (``failed_reads``: error code -> objects); then one more read is checked byte
    for byte. ``meta_s`` is the time of
    ``batch_get_replica_desc`` alone (the master round trip every get starts with), per batch.
    """
    import threading

    barrier = threading.Barrier(threads)
    out: list[dict[str, float]] = [{} for _ in range(threads)]

    def worker(index: int) -> None:
        buffer = _buffer(store, f"zc{index}", batch * size)
        slots, sizes = _slots(buffer, batch, size), [size] * batch
        put_s, failures, keys = 0.0, 0, []
        for round_ in range(put_rounds):
            if keys:
                store.batch_remove(keys, True)
            keys = [f"{prefix}-t{index}-r{round_}-{k}" for k in range(batch)]
            _stage(buffer, keys, size)
            barrier.wait()
            started = time.perf_counter()
            failures += sum(code != 0 for code in store.batch_put_from(keys, slots, sizes))
            put_s += time.perf_counter() - started
        buffer.memory[:] = bytes(batch * size)
        barrier.wait()
        gets, get_s, read_bytes, failed = 0, 0.0, 0, {}
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            codes = store.batch_get_into(keys, slots, sizes)
            get_s += time.perf_counter() - started
            gets += 1
            read_bytes += sum(code for code in codes if code == size)
            for code in codes:
                if code != size:
                    failed[str(code)] = failed.get(str(code), 0) + 1
        # The last timed read may have failed (a lease that ran out on a loaded host): check
        # the bytes after a read that succeeded.
        buffer.memory[:] = bytes(batch * size)
        for _ in range(3):
            if all(code == size for code in store.batch_get_into(keys, slots, sizes)):
                break
        exact = _exact(buffer, keys, size)
        meta_started = time.perf_counter()
        for _ in range(min(gets, 20)):
            store.batch_get_replica_desc(keys)
        meta_s = (time.perf_counter() - meta_started) / max(1, min(gets, 20))
        store.batch_remove(keys, True)
        out[index] = {"put_s": put_s, "put_bytes": put_rounds * batch * size, "put_failures": failures,
                      "get_s": get_s, "gets": gets, "read_bytes": read_bytes, "failed": failed, "exact": exact,
                      "meta_s": meta_s}

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    wall = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    wall = time.perf_counter() - wall
    gets = sum(r["gets"] for r in out)
    failed: dict[str, int] = {}
    for result in out:
        for code, count in result["failed"].items():
            failed[code] = failed.get(code, 0) + count
    # Threads run concurrently: aggregate bandwidth is the bytes read whole over the slowest
    # thread's busy time; a failed object's bytes do not count.
    return {
        "put_gbps": sum(r["put_bytes"] for r in out) / max(r["put_s"] for r in out) / 1e9,
        "get_gbps": sum(r["read_bytes"] for r in out) / max(r["get_s"] for r in out) / 1e9,
        "get_batches": gets, "get_s_per_batch": sum(r["get_s"] for r in out) / max(1, gets),
        "meta_s_per_batch": sum(r["meta_s"] for r in out) / threads,
        "put_failures": sum(r["put_failures"] for r in out), "failed_reads": failed,
        "exact": sum(r["exact"] for r in out), "objects": threads * batch, "wall_s": wall,
    }


# Per-op latency benchmarks: the value is staged untimed, the timed call only runs the store op.
_STAGED: dict[str, bytes] = {}


@op
def stage(store: Any, keys: list[str], size: int) -> None:
    """Prepare the values of ``keys`` (and the registered batch buffer) before a timed op."""
    for key in keys:
        _STAGED[key] = value_for(key, size)
    _stage(_buffer(store, "bench", len(keys) * size), keys, size)


@op
def put_staged(store: Any, key: str) -> int:
    return int(store.put(key, _STAGED.pop(key)))


@op
def get_size_of_read(store: Any, key: str) -> int:
    """store.get; only the length crosses the socket back."""
    return len(store.get(key))


@op
def batch_put_from_staged(store: Any, keys: list[str], size: int) -> list[int]:
    for key in keys:  # this put writes from the registered buffer; the staged copies are not needed
        _STAGED.pop(key, None)
    buffer = _buffer(store, "bench", len(keys) * size)
    return [int(c) for c in store.batch_put_from(keys, _slots(buffer, len(keys), size), [size] * len(keys))]


@op
def batch_get_into_checked(store: Any, keys: list[str], size: int, check: bool = False) -> list[int]:
    """batch_get_into the bench buffer; with ``check``, -1 for every object not read back exactly."""
    buffer = _buffer(store, "bench", len(keys) * size)
    codes = [int(c) for c in store.batch_get_into(keys, _slots(buffer, len(keys), size), [size] * len(keys))]
    if check:
        codes = [code if buffer.memory[i * size:(i + 1) * size] == value_for(key, size) else -1
                 for i, (key, code) in enumerate(zip(keys, codes, strict=True))]
    return codes


@op
def soak(store: Any, prefix: str, ops: int, size: int, keyspace: int, seed: int,
         state: dict[str, Any] | None = None, seconds: float | None = None) -> dict[str, Any]:
    """``ops`` random store operations on ``keyspace`` keys (fewer if ``seconds`` run out first),
    every read classified.

    A mix of upsert (a new version), get and remove. ``state`` carries the model between
    calls (a soak runs as phases with faults in between). A write or remove that fails
    leaves its key uncertain (old version, new version or gone): reads of it are counted
    ``unchecked`` until a write succeeds again. A miss is counted once per version
    (``missed_versions``): the caller explains it by eviction or by the fault of the phase.
    """
    import random

    rng = random.Random(seed)
    checker = Checker(eviction_possible=True)
    model = state or {"written": {}, "versions": {}, "uncertain": [], "missed": []}
    checker.written.update({k: tuple(v) for k, v in model["written"].items()})
    # Versions only grow, also across removes and misses, so an old value never reads as exact.
    versions: dict[str, int] = dict(model["versions"])
    uncertain, missed = set(model["uncertain"]), set(map(tuple, model["missed"]))
    counts = {"upsert_ok": 0, "upsert_failed": 0, "remove_ok": 0, "remove_failed": 0, "get": 0, "unchecked": 0,
              "backpressure": 0, "missed_versions": 0}
    errors: dict[str, int] = {}
    started = time.monotonic()
    done = 0
    for done in range(1, ops + 1):
        if seconds is not None and time.monotonic() - started > seconds:
            done -= 1
            break
        key = f"{prefix}-{rng.randrange(keyspace)}"
        roll = rng.random()
        if roll < 0.4:
            versions[key] = versions.get(key, -1) + 1
            checker.written[key] = (size, versions[key])
            code = store.upsert(key, value_for(key, size, versions[key]))
            if code == 0:
                counts["upsert_ok"] += 1
                uncertain.discard(key)
            else:
                counts["upsert_failed"] += 1
                counts["backpressure"] += code == NO_AVAILABLE_HANDLE
                errors[str(code)] = errors.get(str(code), 0) + 1
                uncertain.add(key)
        elif roll < 0.45:
            code = store.remove(key, True)
            if code in (0, -704):
                counts["remove_ok"] += 1
                checker.removed(key)
                uncertain.discard(key)
            else:
                counts["remove_failed"] += 1
                errors[str(code)] = errors.get(str(code), 0) + 1
                uncertain.add(key)
        else:
            got = bytes(store.get(key))
            counts["get"] += 1
            if key in uncertain:
                counts["unchecked"] += 1
                continue
            if checker.check(key, got) == "miss" and key in checker.written:
                version = (key, checker.written[key][1])
                if version not in missed:
                    missed.add(version)
                    counts["missed_versions"] += 1
                # The miss is recorded; the key holds nothing now, so model it as removed.
                checker.removed(key)
    return {
        **counts, "ops": done, "tally": dict(checker.tally), "errors": errors, "seconds": time.monotonic() - started,
        "state": {"written": checker.written, "versions": versions, "uncertain": sorted(uncertain),
                  "missed": sorted(missed)},
    }


@op
def overwrite(store: Any, keys: list[str], pattern: str = "zeros", seed: int = 0) -> list[dict[str, int]]:
    """Replace the value of each of ``keys`` by as many zero (or seeded random) bytes: the
    corruption a positive control of an output-integrity check needs.

    ``upsert``, because ``put`` over an existing key answers 0 and keeps the old bytes
    (measured on the installed store), and ``remove`` is refused (-706) while a read's lease
    lasts. Per key: ``size`` before, the upsert's ``code`` (0: done; a negative size: the key
    was not there), ``size_after`` and ``exact`` (1 when a read returns the new bytes).
    """
    import random

    if pattern not in ("zeros", "random"):
        raise ValueError(f"pattern must be 'zeros' or 'random', not {pattern!r}")
    rng = random.Random(seed)
    done = []
    for key in keys:
        size = int(store.get_size(key))
        if size <= 0:
            done.append({"size": size, "code": size, "size_after": size, "exact": 0})
            continue
        value = bytes(size) if pattern == "zeros" else rng.randbytes(size)
        code = int(store.upsert(key, value))
        done.append({"size": size, "code": code, "size_after": int(store.get_size(key)),
                     "exact": int(bytes(store.get(key)) == value)})
    return done

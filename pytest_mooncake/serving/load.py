"""Load modes that drive a ``StreamingClient``: closed loop, open loop, and sweeps of either.

- ``Concurrency(n)``: closed loop; ``n`` requests in flight, the next one sent as one finishes.
- ``PoissonRate(rate, seed, max_concurrency)``: open loop; arrivals at exponential gaps from a
  seeded RNG (the first at 0), independent of how fast the server answers. Latencies count from
  each arrival's *scheduled* time, so waiting for a slot under ``max_concurrency`` or behind a busy
  event loop shows up in TTFT instead of disappearing.
- ``Timestamps(offsets, max_concurrency)``: open loop on given send offsets (a trace replay),
  counted from the scheduled time as well.

Every run has an overall deadline besides the per-request timeout of ``ClientConfig``. Requests
unfinished at the deadline are cancelled and recorded with a ``run_timeout`` error, so a run
always returns one record per request, in the order given.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pytest_mooncake.serving.client import (
    ClientConfig,
    RequestError,
    RequestRecord,
    RequestSpec,
    RunClock,
    StreamingClient,
)


@dataclass(frozen=True)
class Concurrency:
    """Closed loop with ``n`` requests in flight."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Concurrency(n={self.n}): n must be at least 1")


@dataclass(frozen=True)
class PoissonRate:
    """Open loop at ``rate`` requests/s (seeded), optionally at most ``max_concurrency`` in flight."""

    rate: float
    seed: int = 0
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0 or math.isinf(self.rate):
            raise ValueError(f"PoissonRate(rate={self.rate}): the rate must be a positive, finite number of requests/s")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"PoissonRate(max_concurrency={self.max_concurrency}): use None for no cap, or >= 1")


@dataclass(frozen=True)
class Timestamps:
    """Open loop at given send offsets in seconds from the run start (a trace replay)."""

    offsets: tuple[float, ...]
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if any(b < a for a, b in zip(self.offsets, self.offsets[1:])) or (self.offsets and self.offsets[0] < 0):
            raise ValueError("Timestamps(offsets=...): offsets must be >= 0 and in ascending order")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"Timestamps(max_concurrency={self.max_concurrency}): use None for no cap, or >= 1")


LoadMode = Concurrency | PoissonRate | Timestamps
OnRecord = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class SweepPoint:
    """One level of a sweep and what it measured."""

    mode: LoadMode
    records: list[RequestRecord]


def arrival_offsets(rate: float, count: int, seed: int) -> list[float]:
    """Seconds from the run start at which each of ``count`` Poisson arrivals is scheduled."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(count - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:count]


def _offsets(mode: PoissonRate | Timestamps, count: int) -> list[float]:
    if isinstance(mode, PoissonRate):
        return arrival_offsets(mode.rate, count, mode.seed)
    if len(mode.offsets) != count:
        raise ValueError(f"Timestamps has {len(mode.offsets)} send offsets for {count} requests")
    return list(mode.offsets)


def default_run_timeout(config: ClientConfig, count: int, mode: LoadMode) -> float:
    """A deadline no healthy run reaches: the schedule's span plus one request timeout per wave."""
    limit = mode.n if isinstance(mode, Concurrency) else (mode.max_concurrency or count)
    span = _offsets(mode, count)[-1] if count and not isinstance(mode, Concurrency) else 0.0
    return span + config.request_timeout_s * max(1, math.ceil(count / max(limit, 1))) + 5.0


async def run_requests_async(
    config: ClientConfig,
    requests: Sequence[RequestSpec],
    mode: LoadMode = Concurrency(1),
    *,
    run_timeout_s: float | None = None,
    on_record: OnRecord | None = None,
) -> list[RequestRecord]:
    """Send ``requests`` under ``mode``; one record per request, in order. Never raises for a failed request.

    ``on_record`` is called with each record as its request finishes (a progress line)."""
    deadline = run_timeout_s if run_timeout_s is not None else default_run_timeout(config, len(requests), mode)
    results: list[RequestRecord | None] = [None] * len(requests)
    scheduled: list[float | None] = [None] * len(requests)

    def done(index: int, record: RequestRecord) -> None:
        results[index] = record
        if on_record is not None:
            on_record(record)

    async with StreamingClient(config) as client:
        clock = RunClock.start()
        if isinstance(mode, Concurrency):
            work = _closed_loop(client, clock, requests, mode.n, done, scheduled)
        else:
            work = _open_loop(client, clock, requests, mode, done, scheduled)
        try:
            await asyncio.wait_for(work, deadline)
        except asyncio.TimeoutError:
            pass  # the unfinished requests are recorded below
    return [
        record if record is not None else _timed_out(spec, clock, scheduled[index], deadline)
        for index, (spec, record) in enumerate(zip(requests, results, strict=True))
    ]


def run_requests(
    config: ClientConfig,
    requests: Sequence[RequestSpec],
    mode: LoadMode = Concurrency(1),
    *,
    run_timeout_s: float | None = None,
    on_record: OnRecord | None = None,
) -> list[RequestRecord]:
    """Synchronous ``run_requests_async``; call the async one from inside a running event loop."""
    return asyncio.run(run_requests_async(config, requests, mode, run_timeout_s=run_timeout_s, on_record=on_record))


def sweep(
    config: ClientConfig,
    modes: Sequence[LoadMode],
    requests_for: Callable[[LoadMode], Sequence[RequestSpec]],
    *,
    run_timeout_s: float | None = None,
) -> list[SweepPoint]:
    """One run per load level, in order; ``requests_for(mode)`` gives each level its own requests
    (fresh prompts per level, or a later level would hit the cache the earlier one filled)."""
    return [
        SweepPoint(mode, run_requests(config, requests_for(mode), mode, run_timeout_s=run_timeout_s))
        for mode in modes
    ]


async def _closed_loop(
    client: StreamingClient,
    clock: RunClock,
    requests: Sequence[RequestSpec],
    n: int,
    done: Callable[[int, RequestRecord], None],
    scheduled: list[float | None],
) -> None:
    queue = iter(range(len(requests)))

    async def worker() -> None:
        for index in queue:  # one shared iterator: each index goes to exactly one worker
            scheduled[index] = time.monotonic()
            done(index, await client.send(requests[index], clock))

    await asyncio.gather(*(worker() for _ in range(min(n, len(requests)))))


async def _open_loop(
    client: StreamingClient,
    clock: RunClock,
    requests: Sequence[RequestSpec],
    mode: PoissonRate | Timestamps,
    done: Callable[[int, RequestRecord], None],
    scheduled: list[float | None],
) -> None:
    gate = asyncio.Semaphore(mode.max_concurrency) if mode.max_concurrency else None

    async def one(index: int, at: float) -> None:
        if gate is None:
            done(index, await client.send(requests[index], clock, at))
            return
        async with gate:
            done(index, await client.send(requests[index], clock, at))

    tasks = []
    try:
        for index, offset in enumerate(_offsets(mode, len(requests))):
            at = clock.monotonic_s + offset
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            scheduled[index] = at
            tasks.append(asyncio.create_task(one(index, at)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _timed_out(spec: RequestSpec, clock: RunClock, scheduled: float | None, deadline: float) -> RequestRecord:
    at = (scheduled - clock.monotonic_s) if scheduled is not None else deadline
    return RequestRecord(
        request_id=spec.request_id, scenario=spec.scenario, round=spec.round, api=spec.api,
        run_start_epoch_s=clock.epoch_s, run_start_monotonic_s=clock.monotonic_s,
        scheduled_at_s=at, sent_at_s=None, finished_at_s=deadline, ttft_s=None, itl_s=(), tpot_s=None, e2e_s=None,
        prompt_tokens=None, completion_tokens=None, cached_tokens=None, content_chunks=0, text="",
        error=RequestError("run_timeout", f"the run deadline of {deadline:.1f} s passed before request "
                           f"{spec.request_id!r} finished{'' if scheduled is not None else ' or was scheduled'}; "
                           "pass a larger run_timeout_s or send fewer requests"),
    )

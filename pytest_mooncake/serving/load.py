"""Load modes that drive a ``StreamingClient``: closed loop, open-loop Poisson, and sweeps of either.

- ``Concurrency(n)``: closed loop; ``n`` requests in flight, the next one sent as one finishes.
- ``PoissonRate(rate, seed, max_concurrency)``: open loop; arrivals at exponential gaps from a
  seeded RNG (the first at 0), independent of how fast the server answers. Latencies count from
  each arrival's *scheduled* time, so waiting for a slot under ``max_concurrency`` or behind a busy
  event loop shows up in TTFT instead of disappearing.

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

from .client import ClientConfig, RequestError, RequestRecord, RequestSpec, RunClock, StreamingClient


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


LoadMode = Concurrency | PoissonRate


@dataclass(frozen=True)
class SweepPoint:
    """One level of a sweep and what it measured."""

    mode: LoadMode
    records: list[RequestRecord]


def arrival_offsets(rate: float, count: int, seed: int) -> list[float]:
    """Seconds from the run start at which each of ``count`` Poisson arrivals is scheduled."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(count - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:count]


def default_run_timeout(config: ClientConfig, count: int, mode: LoadMode) -> float:
    """A deadline no healthy run reaches: the schedule's span plus one request timeout per wave."""
    limit = mode.n if isinstance(mode, Concurrency) else (mode.max_concurrency or count)
    span = 0.0 if isinstance(mode, Concurrency) else arrival_offsets(mode.rate, count, mode.seed)[-1] if count else 0.0
    return span + config.request_timeout_s * max(1, math.ceil(count / max(limit, 1))) + 5.0


async def run_requests_async(
    config: ClientConfig,
    requests: Sequence[RequestSpec],
    mode: LoadMode = Concurrency(1),
    *,
    run_timeout_s: float | None = None,
) -> list[RequestRecord]:
    """Send ``requests`` under ``mode``; one record per request, in order. Never raises for a failed request."""
    deadline = run_timeout_s if run_timeout_s is not None else default_run_timeout(config, len(requests), mode)
    results: list[RequestRecord | None] = [None] * len(requests)
    scheduled: list[float | None] = [None] * len(requests)
    async with StreamingClient(config) as client:
        clock = RunClock.start()
        if isinstance(mode, Concurrency):
            work = _closed_loop(client, clock, requests, mode.n, results, scheduled)
        else:
            work = _open_loop(client, clock, requests, mode, results, scheduled)
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
) -> list[RequestRecord]:
    """Synchronous ``run_requests_async``; call the async one from inside a running event loop."""
    return asyncio.run(run_requests_async(config, requests, mode, run_timeout_s=run_timeout_s))


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
    results: list[RequestRecord | None],
    scheduled: list[float | None],
) -> None:
    queue = iter(range(len(requests)))

    async def worker() -> None:
        for index in queue:  # one shared iterator: each index goes to exactly one worker
            scheduled[index] = time.monotonic()
            results[index] = await client.send(requests[index], clock)

    await asyncio.gather(*(worker() for _ in range(min(n, len(requests)))))


async def _open_loop(
    client: StreamingClient,
    clock: RunClock,
    requests: Sequence[RequestSpec],
    mode: PoissonRate,
    results: list[RequestRecord | None],
    scheduled: list[float | None],
) -> None:
    gate = asyncio.Semaphore(mode.max_concurrency) if mode.max_concurrency else None

    async def one(index: int, at: float) -> None:
        if gate is None:
            results[index] = await client.send(requests[index], clock, at)
            return
        async with gate:
            results[index] = await client.send(requests[index], clock, at)

    tasks = []
    try:
        for index, offset in enumerate(arrival_offsets(mode.rate, len(requests), mode.seed)):
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

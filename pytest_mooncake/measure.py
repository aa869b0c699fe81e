"""Streaming measurement of OpenAI-compatible requests, defined as vLLM's ``bench serve`` does.

- TTFT: from the request's send time to the first streamed chunk that carries generated text.
- ITL: gaps between successive chunks that carry generated text.
- TPOT: (E2E - TTFT) / (completion_tokens - 1), for completion_tokens > 1.
- E2E: from the send time to the last chunk.

Load modes: ``Concurrency(n)`` keeps n requests in flight (closed loop); ``PoissonRate(r)``
schedules requests at exponential gaps (open loop) and counts TTFT and E2E from the
*scheduled* time, so client-side queueing behind ``max_in_flight`` is never hidden.
Every request has a timeout, and every failure (refused connection, HTTP error with the server's message, a
stream cut mid-way, zero completion tokens) becomes an ``error`` on its record, never an
exception that ends the round.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .scenarios import Prompt
from .vllm.server import Endpoint


@dataclass(frozen=True)
class Concurrency:
    """Closed loop: at most ``limit`` requests in flight (None: all at once)."""

    limit: int | None = 1


@dataclass(frozen=True)
class PoissonRate:
    """Open loop: ``rate`` requests/s at exponential gaps (seeded), optionally capped in flight."""

    rate: float
    seed: int = 0
    max_in_flight: int | None = None


@dataclass(frozen=True)
class Timestamps:
    """Open loop on given send offsets in seconds (a trace replay), optionally capped in flight."""

    offsets: tuple[float, ...]
    max_in_flight: int | None = None


LoadMode = Concurrency | PoissonRate | Timestamps


@dataclass(frozen=True)
class Record:
    request_id: str
    round: str
    ttft_s: float | None
    e2e_s: float | None
    itl_s: tuple[float, ...] = ()
    scheduled_at_s: float = 0.0  # since the round started
    sent_at_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    text: str = ""
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or self.completion_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "itl_s": list(self.itl_s), "tpot_s": self.tpot_s}


@dataclass
class _Stream:
    started: float
    first: float | None = None
    last: float | None = None
    itl: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    usage: Any = None

    def chunk(self, now: float, text: str) -> None:
        if text:
            if self.first is None:
                self.first = now
            elif self.last is not None:
                self.itl.append(now - self.last)
            self.last = now
            self.text.append(text)


def _usage_fields(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    details = getattr(usage, "prompt_tokens_details", None)
    return {
        "prompt_tokens": int(usage.prompt_tokens or 0),
        "completion_tokens": int(usage.completion_tokens or 0),
        "cached_tokens": int(getattr(details, "cached_tokens", 0) or 0),
    }


def _error_text(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None) or getattr(exc, "message", None) or str(exc)
    prefix = f"HTTP {status}: " if status else ""
    return f"{type(exc).__name__}: {prefix}{body}"[:500]


async def _consume(client: Any, endpoint: Endpoint, prompt: Prompt, temperature: float, stream: _Stream) -> None:
    common: dict[str, Any] = {"model": endpoint.model, "max_tokens": prompt.max_tokens, "temperature": temperature,
                              "stream": True, "stream_options": {"include_usage": True}}
    if endpoint.spawned:
        # Our dummy-weight model may pick EOS first; vLLM's min_tokens keeps every answer non-empty,
        # so an empty answer always means a broken server, never an unlucky sample.
        common["extra_body"] = {"min_tokens": 1}
    if prompt.messages:
        response = await client.chat.completions.create(messages=list(prompt.messages), **common)
    else:
        response = await client.completions.create(prompt=list(prompt.token_ids), **common)
    async for chunk in response:
        if chunk.choices:
            choice = chunk.choices[0]
            text = choice.delta.content if prompt.messages else choice.text
            stream.chunk(time.perf_counter(), text or "")
        if chunk.usage is not None:
            stream.usage = chunk.usage


async def _one(
    client: Any, endpoint: Endpoint, prompt: Prompt, temperature: float, timeout: float, round_start: float, scheduled: float
) -> Record:
    sent = time.perf_counter()
    # Latency counts from the scheduled time: waiting for a free slot is part of it.
    # A closed loop schedules a request when a slot frees, i.e. when it is sent.
    scheduled = min(scheduled, sent)
    stream = _Stream(scheduled)
    times = {"scheduled_at_s": scheduled - round_start, "sent_at_s": sent - round_start}
    try:
        await asyncio.wait_for(_consume(client, endpoint, prompt, temperature, stream), timeout)
    except (Exception, asyncio.TimeoutError) as exc:  # every failure is recorded on the request
        cut = f"stream_cut after {len(stream.text)} chunks: " if stream.text else ""
        return Record(prompt.request_id, prompt.round, None, None, error=cut + _error_text(exc), **times)
    usage = _usage_fields(stream.usage)
    error = None
    if stream.usage is None:
        error = "incomplete_stream: the stream ended without a usage chunk"
    elif usage["completion_tokens"] < 1 or stream.first is None:
        error = "empty_completion: HTTP 200 with 0 completion tokens (a broken KV connector looks like this)"
    ttft = None if stream.first is None else stream.first - stream.started
    e2e = None if stream.last is None else stream.last - stream.started
    return Record(
        prompt.request_id, prompt.round, ttft, e2e, tuple(stream.itl), text="".join(stream.text), error=error,
        **times, **usage,
    )


def _offsets(mode: LoadMode, count: int) -> list[float] | None:
    if isinstance(mode, Concurrency):
        return None
    if isinstance(mode, Timestamps):
        if len(mode.offsets) != count:
            raise ValueError(f"{len(mode.offsets)} send offsets for {count} requests")
        return list(mode.offsets)
    gaps = np.random.default_rng(mode.seed).exponential(1.0 / mode.rate, count)
    return list(np.concatenate([[0.0], np.cumsum(gaps[:-1])]))


async def _round(endpoint: Endpoint, prompts: Sequence[Prompt], mode: LoadMode, temperature: float, timeout: float) -> list[Record]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "EMPTY", max_retries=0)
    limit = mode.limit if isinstance(mode, Concurrency) else mode.max_in_flight
    gate = asyncio.Semaphore(limit or len(prompts) or 1)
    offsets = _offsets(mode, len(prompts))
    start = time.perf_counter()

    async def send(index: int, prompt: Prompt) -> Record:
        if offsets is not None:
            await asyncio.sleep(max(0.0, start + offsets[index] - time.perf_counter()))
        scheduled = start + offsets[index] if offsets is not None else math.inf
        async with gate:
            return await _one(client, endpoint, prompt, temperature, timeout, start, scheduled)

    try:
        return list(await asyncio.gather(*(send(i, prompt) for i, prompt in enumerate(prompts))))
    finally:
        await client.close()


def run_round(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    *,
    mode: LoadMode = Concurrency(1),
    temperature: float = 0.0,
    timeout: float = 300.0,
) -> tuple[list[Record], float]:
    """Send a round; return its records and its wall time in seconds."""
    started = time.perf_counter()
    records = asyncio.run(_round(endpoint, prompts, mode, temperature, timeout))
    return records, time.perf_counter() - started


def sweep(
    endpoint: Endpoint,
    prompts_for: Callable[[str], Sequence[Prompt]],
    modes: Sequence[LoadMode],
    *,
    temperature: float = 0.0,
    timeout: float = 300.0,
) -> list[tuple[LoadMode, list[Record], float]]:
    """One round per load level; ``prompts_for(label)`` gives fresh prompts for each level."""
    results = []
    for mode in modes:
        records, wall = run_round(endpoint, prompts_for(repr(mode)), mode=mode, temperature=temperature, timeout=timeout)
        results.append((mode, records, wall))
    return results

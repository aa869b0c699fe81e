"""Streaming measurement of OpenAI-compatible requests, defined as vLLM's ``bench serve`` does.

- TTFT: from the request's send time to the first streamed chunk that carries generated text.
- ITL: gaps between successive chunks that carry generated text.
- TPOT: (E2E - TTFT) / (completion_tokens - 1), for completion_tokens > 1.
- E2E: from the send time to the last chunk.

Requests of one round are sent with at most ``concurrency`` in flight; every request has a
timeout, and every failure (refused connection, HTTP error with the server's message, a
stream cut mid-way, zero completion tokens) becomes an ``error`` on its record, never an
exception that ends the round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .scenarios import Prompt
from .vllm.server import Endpoint


@dataclass(frozen=True)
class Record:
    request_id: str
    round: str
    ttft_s: float | None
    e2e_s: float | None
    itl_s: tuple[float, ...] = ()
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
    response = await client.completions.create(
        model=endpoint.model,
        prompt=list(prompt.token_ids),
        max_tokens=prompt.max_tokens,
        temperature=temperature,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in response:
        if chunk.choices:
            stream.chunk(time.perf_counter(), chunk.choices[0].text or "")
        if chunk.usage is not None:
            stream.usage = chunk.usage


async def _one(client: Any, endpoint: Endpoint, prompt: Prompt, temperature: float, timeout: float) -> Record:
    stream = _Stream(time.perf_counter())
    try:
        await asyncio.wait_for(_consume(client, endpoint, prompt, temperature, stream), timeout)
    except (Exception, asyncio.TimeoutError) as exc:  # every failure is recorded on the request
        cut = f"stream_cut after {len(stream.text)} chunks: " if stream.text else ""
        return Record(prompt.request_id, prompt.round, None, None, error=cut + _error_text(exc))
    usage = _usage_fields(stream.usage)
    error = None
    if stream.usage is None:
        error = "incomplete_stream: the stream ended without a usage chunk"
    elif usage["completion_tokens"] < 1 or stream.first is None:
        error = "empty_completion: HTTP 200 with 0 completion tokens (a broken KV connector looks like this)"
    ttft = None if stream.first is None else stream.first - stream.started
    e2e = None if stream.last is None else stream.last - stream.started
    return Record(
        prompt.request_id, prompt.round, ttft, e2e, tuple(stream.itl), text="".join(stream.text), error=error, **usage
    )


async def _round(endpoint: Endpoint, prompts: Sequence[Prompt], concurrency: int | None, temperature: float, timeout: float) -> list[Record]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "EMPTY", max_retries=0)
    gate = asyncio.Semaphore(concurrency or len(prompts) or 1)

    async def bounded(prompt: Prompt) -> Record:
        async with gate:
            return await _one(client, endpoint, prompt, temperature, timeout)

    try:
        return list(await asyncio.gather(*(bounded(prompt) for prompt in prompts)))
    finally:
        await client.close()


def run_round(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    *,
    concurrency: int | None = 1,
    temperature: float = 0.0,
    timeout: float = 300.0,
) -> tuple[list[Record], float]:
    """Send a round; return its records and its wall time in seconds."""
    started = time.perf_counter()
    records = asyncio.run(_round(endpoint, prompts, concurrency, temperature, timeout))
    return records, time.perf_counter() - started

"""One streamed request against an OpenAI-compatible server, timed as vLLM's ``bench serve`` does.

Metric definitions (all in seconds on ``time.monotonic``, the system-wide CLOCK_MONOTONIC on Linux,
so another process on the same host can be compared with them):

- **start**: the request's *scheduled* send time. In a closed loop (fixed concurrency) a request is
  scheduled when a slot frees and sent at once, so start and actual send coincide. In an open loop
  (Poisson) it is the arrival time the schedule gave it, so time spent queueing in the client behind
  a concurrency cap or a late event loop is part of every latency below.
- **TTFT**: from start to the first chunk that carries generated content (non-empty ``text`` for
  completions, non-empty ``delta.content`` or ``delta.reasoning_content`` for chat) or generated
  token ids (vLLM's ``token_ids``, sent when the request asks with ``return_token_ids``: a
  random-weight model's tokens may decode to no text at all).
- **ITL**: the gaps between successive content chunks (one value per gap, so a chunk carrying several
  tokens counts once, as in vLLM).
- **E2E**: from start to the last chunk of the stream (the usage chunk included).
- **TPOT**: ``(E2E - TTFT) / (completion_tokens - 1)`` when ``completion_tokens > 1``, else ``None``;
  ``completion_tokens`` comes from the server's ``usage``, not from counting chunks.

Where this differs from vLLM's ``bench serve``:

1. vLLM starts the clock when the request is actually sent, also in an open loop, which hides
   client-side queueing (vllm#54101). We count from the scheduled time; ``RequestRecord.send_lag_s``
   (actual minus scheduled send) gives vLLM's figure back as ``ttft_s - send_lag_s``.
2. vLLM counts any chunk with ``choices`` as a token chunk, even one with empty text (e.g. the chat
   role announcement). We count only chunks with content, so an early role-only chunk from a
   server cannot fake a short TTFT. On vLLM both arrive together, so the numbers agree.

Every failure becomes a ``RequestError`` on the record, never an exception out of ``send``:
``connection_error``, ``timeout``, ``http_error`` (with the status and the server's message),
``not_streaming`` (a plain JSON reply to a streaming request), ``stream_cut`` (the stream ended
without ``data: [DONE]``), ``bad_chunk`` (unparsable SSE data), ``server_error_event`` (an
``error`` object inside the stream), ``missing_usage``, ``empty_completion`` (HTTP 200 with
0 completion tokens: a failed KV load under LMCache ends requests this way and looks like a huge
speed-up), ``no_content`` (completion tokens but no chunk carried text or token ids: a broken
server; requests to a random-weight model ask for token ids, so its blank tokens still count)
and ``client_error`` (anything unexpected, with its type).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# A prefill/decode proxy's report of what the prefiller took from a cache (vllm/proxy.py).
PREFILL_CACHED_HEADER = "X-Prefill-Cached-Tokens"

ERROR_EXCERPT_CHARS = 500
# An SSE line carries one chunk; a long reasoning chunk can outgrow aiohttp's 64 KiB default.
LINE_LIMIT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ClientConfig:
    """Where to send requests and how patient to be.

    ``base_url`` includes the API prefix, e.g. ``http://127.0.0.1:8000/v1``. ``max_connections``
    bounds the HTTP connection pool; it should be at least the load's concurrency, or requests
    queue inside the pool where no timestamp sees them.
    """

    base_url: str
    model: str
    api_key: str = "EMPTY"
    request_timeout_s: float = 300.0
    max_connections: int = 1024
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: chat when ``messages`` is set, completions when ``prompt`` is.

    ``prompt`` may be text or a list of token ids. ``extra_body`` is merged into the JSON body
    (e.g. ``{"min_tokens": 1}`` or ``{"kv_transfer_params": ...}``).
    """

    request_id: str
    scenario: str = ""
    round: str = ""
    messages: Sequence[Mapping[str, Any]] | None = None
    prompt: str | Sequence[int] | None = None
    max_tokens: int = 16
    temperature: float = 0.0
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(
                f"RequestSpec {self.request_id!r}: give exactly one of messages= (chat API) or prompt= (completions API)"
            )

    @property
    def api(self) -> str:
        return "chat" if self.messages is not None else "completions"


@dataclass(frozen=True)
class RequestError:
    """Why a request failed: a stable ``kind``, the server's or library's ``message``, the HTTP status."""

    kind: str
    message: str
    status_code: int | None = None

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.kind}{status}: {self.message}"


@dataclass(frozen=True)
class RunClock:
    """The origin of a run: record times are offsets from ``monotonic_s``; ``epoch_s`` dates it."""

    monotonic_s: float
    epoch_s: float

    @classmethod
    def start(cls) -> RunClock:
        return cls(time.monotonic(), time.time())


@dataclass(frozen=True)
class RequestRecord:
    """What one request measured; ``dataclasses.asdict`` of it is JSON-serialisable.

    ``scheduled_at_s``, ``sent_at_s`` and ``finished_at_s`` are seconds since the run's origin
    (``run_start_monotonic_s`` on ``time.monotonic``, ``run_start_epoch_s`` on the wall clock).
    Latencies are ``None`` when the stream never got that far.
    """

    request_id: str
    scenario: str
    round: str
    api: str
    run_start_epoch_s: float
    run_start_monotonic_s: float
    scheduled_at_s: float
    sent_at_s: float | None
    finished_at_s: float
    ttft_s: float | None
    itl_s: tuple[float, ...]
    tpot_s: float | None
    e2e_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    content_chunks: int  # chunks that carried text or token ids
    text: str
    error: RequestError | None
    # Through a prefill/decode proxy, ``cached_tokens`` is the prefiller's reuse (what decides
    # whether the prompt was computed) and this is what the decoder loaded.
    decode_cached_tokens: int | None = None
    # The generated token ids when the server sent them (``return_token_ids``), else None: what
    # a random-weight model's answers are compared by, since their text may be empty.
    token_ids: tuple[int, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def send_lag_s(self) -> float | None:
        """Actual minus scheduled send: the client-side queueing a sent-time clock would hide."""
        return None if self.sent_at_s is None else self.sent_at_s - self.scheduled_at_s


def tpot(e2e_s: float | None, ttft_s: float | None, completion_tokens: int | None) -> float | None:
    """vLLM's time per output token, excluding the first token."""
    if e2e_s is None or ttft_s is None or completion_tokens is None or completion_tokens < 2:
        return None
    return (e2e_s - ttft_s) / (completion_tokens - 1)


class _Stream:
    """Accumulates one SSE stream; every timestamp is taken as the line is parsed."""

    def __init__(self, api: str, where: str) -> None:
        self.api = api
        self.where = where
        self.first: float | None = None
        self.last_content: float | None = None
        self.last_chunk: float | None = None
        self.itl: list[float] = []
        self.chunks = 0
        self.text: list[str] = []
        self.token_ids: list[int] | None = None
        self.usage: Mapping[str, Any] | None = None
        self.prefill_cached: int | None = None
        self.done = False
        self.error: RequestError | None = None

    def feed(self, line: str) -> None:
        if not line.startswith("data:"):
            return  # blank separators, SSE comments (pings) and event/id fields carry no data
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        now = time.monotonic()
        try:
            chunk = json.loads(data)
        except ValueError:
            self.error = RequestError("bad_chunk", f"unparsable SSE data line {data[:ERROR_EXCERPT_CHARS]!r} [{self.where}]")
            return
        self.last_chunk = now
        if not isinstance(chunk, dict):
            self.error = RequestError("bad_chunk", f"SSE data is not a JSON object: {data[:ERROR_EXCERPT_CHARS]!r} [{self.where}]")
            return
        if chunk.get("error"):
            self.error = RequestError("server_error_event", f"{_server_message(chunk)} [{self.where}]")
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices:
            piece = _content(self.api, choices[0])
            ids = choices[0].get("token_ids")
            if ids:
                self.token_ids = [*(self.token_ids or ()), *ids]
            if piece or ids:
                if self.first is None:
                    self.first = now
                else:
                    self.itl.append(now - self.last_content)  # type: ignore[operator]
                self.last_content = now
                self.chunks += 1
            self.text.append(piece)


def _content(api: str, choice: Mapping[str, Any]) -> str:
    if api == "completions":
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""


def _server_message(body: object) -> str:
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])[:ERROR_EXCERPT_CHARS]
        if body.get("message"):
            return str(body["message"])[:ERROR_EXCERPT_CHARS]
    return str(body)[:ERROR_EXCERPT_CHARS]


def _classify(exc: BaseException, stream: _Stream, where: str) -> RequestError:
    if isinstance(exc, asyncio.TimeoutError):
        return RequestError("timeout", f"no complete reply within the request timeout [{where}]; raise "
                            "ClientConfig.request_timeout_s if the server is just slow")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RequestError("connection_error", f"{type(exc).__name__}: {exc} [{where}]; is the server "
                            "running and listening there?")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return RequestError("stream_cut", f"the stream broke after {stream.chunks} content chunks: "
                            f"{type(exc).__name__}: {exc} [{where}]")
    return RequestError("client_error", f"{type(exc).__name__}: {exc} [{where}]")


def _int(usage: Mapping[str, Any] | None, *path: str) -> int | None:
    value: Any = usage
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return int(value) if isinstance(value, (int, float)) else None


def _verdict_on_stream(stream: _Stream, completion_tokens: int | None, where: str) -> RequestError | None:
    if stream.error is not None:
        return stream.error
    if not stream.done:
        return RequestError("stream_cut", f"the stream ended after {stream.chunks} content chunks without "
                            f"'data: [DONE]' [{where}]")
    if stream.usage is None:
        return RequestError("missing_usage", f"no usage chunk in the stream [{where}]; the server ignored "
                            "stream_options.include_usage, so token counts and cached tokens are unknown")
    if not completion_tokens:
        return RequestError("empty_completion", f"HTTP 200 with 0 completion tokens [{where}]; a failed KV load "
                            "(LMCache with kv_load_failure_policy=fail) ends requests this way, and its short "
                            "latency is not a speed-up: check the connector's and the server's logs")
    if stream.first is None:
        return RequestError("no_content", f"usage reports {completion_tokens} completion tokens but no chunk "
                            f"carried text or token ids [{where}], so TTFT is undefined")
    return None


class StreamingClient:
    """Measures streamed requests over one aiohttp session; use as ``async with``.

    It speaks the OpenAI HTTP API itself rather than through the ``openai`` SDK: on 2 cores at
    256 concurrent streams the SDK put 0.5-0.9 s of client time into TTFT at p99 over httpx and
    0.4 s over its aiohttp transport, a direct aiohttp stream 14-60 ms
    (``benchmarks/bench_client_overhead.py``).
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Authorization": f"Bearer {config.api_key}", **config.headers}

    async def __aenter__(self) -> StreamingClient:
        # No session-wide timeout: send() bounds each request, so one slow stream fails alone.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.max_connections),
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=LINE_LIMIT_BYTES,
            max_line_size=LINE_LIMIT_BYTES,
            max_field_size=LINE_LIMIT_BYTES,
        )
        await self.warm_up()
        return self

    async def warm_up(self) -> None:
        """GET ``/models`` once, so the first measured request does not pay the connection set-up.
        It changes no server state; a failure is left for the measured requests to record."""
        try:
            async with self.session.get(self.config.base_url + "/models", headers=self._headers,
                                        timeout=aiohttp.ClientTimeout(total=min(self.config.request_timeout_s, 10.0))) as reply:
                await reply.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("StreamingClient is used outside 'async with'")
        return self._session

    async def send(self, spec: RequestSpec, clock: RunClock, scheduled: float | None = None) -> RequestRecord:
        """Send ``spec`` now; latencies count from ``scheduled`` (monotonic), or from now when it is None."""
        sent = time.monotonic()
        start = sent if scheduled is None else min(scheduled, sent)
        where = f"{spec.api} request {spec.request_id!r} to {self.config.base_url} model {self.config.model!r}"
        stream = _Stream(spec.api, where)
        error: RequestError | None = None
        try:
            await asyncio.wait_for(self._stream(spec, stream, where), self.config.request_timeout_s)
        except Exception as exc:  # every failure is recorded on the request; none may end the run
            error = _classify(exc, stream, where)
        completion_tokens = _int(stream.usage, "completion_tokens")
        if error is None:
            error = _verdict_on_stream(stream, completion_tokens, where)
        ttft = None if stream.first is None else stream.first - start
        e2e = None if stream.last_chunk is None else stream.last_chunk - start
        return RequestRecord(
            request_id=spec.request_id,
            scenario=spec.scenario,
            round=spec.round,
            api=spec.api,
            run_start_epoch_s=clock.epoch_s,
            run_start_monotonic_s=clock.monotonic_s,
            scheduled_at_s=start - clock.monotonic_s,
            sent_at_s=sent - clock.monotonic_s,
            finished_at_s=time.monotonic() - clock.monotonic_s,
            ttft_s=ttft,
            itl_s=tuple(stream.itl),
            tpot_s=tpot(e2e, ttft, completion_tokens) if error is None else None,
            e2e_s=e2e,
            prompt_tokens=_int(stream.usage, "prompt_tokens"),
            completion_tokens=completion_tokens,
            cached_tokens=_int(stream.usage, "prompt_tokens_details", "cached_tokens") if stream.prefill_cached is None
            else stream.prefill_cached,
            content_chunks=stream.chunks,
            text="".join(stream.text),
            error=error,
            decode_cached_tokens=None if stream.prefill_cached is None
            else _int(stream.usage, "prompt_tokens_details", "cached_tokens"),
            token_ids=None if stream.token_ids is None else tuple(stream.token_ids),
        )

    async def _stream(self, spec: RequestSpec, stream: _Stream, where: str) -> None:
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": spec.max_tokens,
            "temperature": spec.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            **spec.extra_body,
        }
        if spec.messages is not None:
            body["messages"] = list(spec.messages)
        else:
            body["prompt"] = spec.prompt if isinstance(spec.prompt, str) else list(spec.prompt)  # type: ignore[arg-type]
        url = self.config.base_url + ("/chat/completions" if spec.api == "chat" else "/completions")
        # vLLM adopts X-Request-Id, so server logs and traces can be joined with our records.
        headers = {**self._headers, "X-Request-Id": spec.request_id}
        async with self.session.post(url, data=json.dumps(body), headers={**headers, "Content-Type": "application/json"}) as reply:
            content_type = reply.headers.get("Content-Type", "")
            if PREFILL_CACHED_HEADER in reply.headers:
                stream.prefill_cached = int(reply.headers[PREFILL_CACHED_HEADER])
            if reply.status >= 400:
                text = (await reply.read()).decode(errors="replace")
                try:
                    message = _server_message(json.loads(text))
                except ValueError:
                    message = text[:ERROR_EXCERPT_CHARS]
                stream.error = RequestError("http_error", f"{message} [{where}]", reply.status)
                return
            if "text/event-stream" not in content_type:
                text = (await reply.read()).decode(errors="replace")
                stream.error = RequestError(
                    "not_streaming",
                    f"HTTP {reply.status} with Content-Type {content_type!r} instead of an SSE stream "
                    f"[{where}]; the server or a proxy ignored stream=true. Body: {text[:ERROR_EXCERPT_CHARS]!r}",
                    reply.status,
                )
                return
            async for line in reply.content:
                stream.feed(line.decode(errors="replace"))
                if stream.error is not None:
                    return

"""TEST DOUBLE: a known-delay OpenAI-compatible streaming server, for testing our measurement code.

It is not a model server. It streams ``tokens`` chunks of text: the first ``ttft`` seconds after
the request arrived, then one every ``itl`` seconds, then a usage chunk (with
``prompt_tokens_details.cached_tokens``) and ``data: [DONE]``. Chat streams start with a role-only
chunk at once, as some servers do, so a client that counted it would measure a TTFT near zero.

Per request, a ``"fake"`` object in the JSON body overrides the defaults and plants faults::

    {"fake": {"ttft": 0.2, "itl": 0.01, "tokens": 4, "cached": 96, "fault": "cut"}}

``"prefill_cached": N`` adds the ``X-Prefill-Cached-Tokens: N`` header a prefill/decode proxy sends.

``slots`` makes it a server of limited capacity: at most that many requests are served at once
and the others wait for a slot, so TTFT grows with the offered load as on a real server past its
knee (0: no limit).

``jitter`` plants noise: the first chunk then comes after ``ttft`` times a log-normal factor
(sigma ``jitter``) drawn from a generator seeded with the ``X-Request-Id``, so the same requests
get the same delays in every run.

A request without ``"stream": true`` gets one plain JSON completion of ``tokens`` tokens.

Faults: ``http500`` (500 with a message), ``not_streaming`` (a plain JSON completion),
``cut`` (the connection drops after two chunks), ``no_done`` (the stream ends without
``[DONE]``), ``empty`` (HTTP 200, 0 completion tokens), ``error_event`` (an error object inside
the stream), ``no_usage`` (no usage chunk), ``blank`` (every chunk's text is empty, as when a
random-weight model's tokens decode to nothing). A model other than ``model`` gets vLLM's 404.
With ``"return_token_ids": true`` in the body, each chunk carries ``token_ids`` as vLLM's do
(token ``100 + i`` for the i-th), blank or not.

``/metrics`` serves vLLM-style counters (labels on two engines, to be summed): prefix-cache
queries and hits grow with each request; ``lmcache:num_stored_tokens_total`` keeps growing for
``save_s`` seconds after each request, like background KV saves; vLLM's request-phase histograms
(time to first token from arrival, queue time waiting for a ``slots`` gate, prefill time from
there to the first chunk) are observed when a streamed request's first chunk is written. ``/debug/timings`` returns, per
``X-Request-Id``, the monotonic times the request arrived and its first content chunk was written.

In a test: ``with FakeOpenAIServer(ttft=0.05) as server: server.base_url`` runs it in its own
process; ``python tests/serving/fake_openai_server.py --port 0 --ttft 0.05`` prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAULTS = ("http500", "not_streaming", "cut", "no_done", "empty", "error_event", "no_usage", "blank")


@dataclass
class Defaults:
    ttft: float = 0.05
    itl: float = 0.01
    tokens: int = 4
    cached: int = 0
    save_s: float = 0.0
    jitter: float = 0.0
    slots: int = 0


@dataclass
class Counters:
    queries: int = 0
    hits: int = 0
    stored: int = 0
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    # metric -> [sum, count]; exported from the start, as vLLM's are
    phases: dict[str, list[float]] = field(default_factory=lambda: {
        m: [0.0, 0] for m in ("vllm:time_to_first_token_seconds", "vllm:request_queue_time_seconds",
                              "vllm:request_prefill_time_seconds")})

    def observe(self, metric: str, seconds: float) -> None:
        total = self.phases[metric]
        total[0] += seconds
        total[1] += 1


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _chunk(chat: bool, text: str | None, role: bool = False, token_ids: list[int] | None = None) -> dict[str, Any]:
    if chat:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
    else:
        choice = {"index": 0, "text": text, "finish_reason": None}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": "fake", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
            "model": "fake", "choices": [choice]}


def _prompt_tokens(payload: dict[str, Any]) -> int:
    prompt = payload.get("prompt")
    if isinstance(prompt, list):
        return len(prompt)
    if isinstance(prompt, str):
        return len(prompt.split())
    return sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))


def make_app(defaults: Defaults, counters: Counters, model: str = "fake") -> web.Application:
    background: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(defaults.slots) if defaults.slots else None

    async def save_in_background(tokens: int) -> None:
        steps = 5
        for step in range(steps):
            await asyncio.sleep(defaults.save_s / steps)
            counters.stored += tokens // steps + (tokens % steps if step == steps - 1 else 0)

    def save_later(tokens: int) -> None:
        if defaults.save_s > 0:
            task = asyncio.get_running_loop().create_task(save_in_background(tokens))
            background.add(task)
            task.add_done_callback(background.discard)

    async def generate(request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        if gate is None:
            return await respond(request, arrived)
        async with gate:
            return await respond(request, arrived)

    async def respond(request: web.Request, arrived: float) -> web.StreamResponse:
        received = time.monotonic()
        payload = await request.json()
        knobs = {**vars(defaults), **payload.get("fake", {})}
        fault = knobs.get("fault")
        request_id = request.headers.get("X-Request-Id", "")
        if fault == "http500":
            return web.json_response({"error": {"message": "engine core died (planted fault)", "code": 500}}, status=500)
        if payload.get("model") != model:
            message = f"The model `{payload.get('model')}` does not exist."
            return web.json_response({"error": {"message": message, "type": "NotFoundError", "code": 404}}, status=404)
        chat = "messages" in payload
        prompt_tokens = _prompt_tokens(payload)
        if fault == "not_streaming":
            return web.json_response({"id": "fake", "object": "text_completion", "choices": [{"text": "hi"}],
                                      "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1}})
        if not payload.get("stream"):  # a plain request (the wiring check's) gets a plain answer, as from vLLM
            produced = 0 if fault == "empty" else int(knobs["tokens"])
            save_later(prompt_tokens)
            return web.json_response({"id": "fake", "object": "text_completion", "choices": [{"text": " t" * produced}],
                                      "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": produced}})
        produced = 0 if fault == "empty" else int(knobs["tokens"])
        headers = {"Content-Type": "text/event-stream"}
        if "prefill_cached" in knobs:
            headers["X-Prefill-Cached-Tokens"] = str(knobs["prefill_cached"])
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        if chat:
            await response.write(_sse(_chunk(True, None, role=True)))
        first = float(knobs["ttft"])
        if float(knobs["jitter"]):
            seed = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
            first *= random.Random(seed).lognormvariate(0.0, float(knobs["jitter"]))
        for index in range(produced):
            await asyncio.sleep(first if index == 0 else float(knobs["itl"]))
            if index == 0:
                counters.timings[request_id] = {"received": received, "first_write": time.monotonic()}
                # Observed at the first token, so a client that read the whole answer finds them counted.
                counters.observe("vllm:time_to_first_token_seconds", time.monotonic() - arrived)
                counters.observe("vllm:request_queue_time_seconds", received - arrived)
                counters.observe("vllm:request_prefill_time_seconds", time.monotonic() - received)
            ids = [100 + index] if payload.get("return_token_ids") else None
            await response.write(_sse(_chunk(chat, "" if fault == "blank" else f" t{index}", token_ids=ids)))
            if fault == "cut" and index == 1:
                assert request.transport is not None
                request.transport.close()
                return response
            if fault == "error_event" and index == 0:
                await response.write(_sse({"error": {"message": "KV load failed (planted fault)", "code": 500}}))
                await response.write_eof()
                return response
        if fault == "empty" and knobs["ttft"]:
            await asyncio.sleep(float(knobs["ttft"]))
        cached = int(knobs["cached"])
        counters.queries += prompt_tokens
        counters.hits += cached
        if fault != "no_usage":
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": produced,
                     "total_tokens": prompt_tokens + produced, "prompt_tokens_details": {"cached_tokens": cached}}
            await response.write(_sse({"id": "fake", "object": "chunk", "created": 0, "model": model,
                                       "choices": [], "usage": usage}))
        if fault != "no_done":
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        save_later(prompt_tokens)
        return response

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def metrics(_: web.Request) -> web.Response:
        lines = [
            "# HELP vllm:prefix_cache_queries Prefix cache queries, in tokens.",
            "# TYPE vllm:prefix_cache_queries counter",
            f'vllm:prefix_cache_queries_total{{engine="0",model_name="{model}"}} {counters.queries}',
            f'vllm:prefix_cache_queries_total{{engine="1",model_name="{model}"}} 0.0',
            "# HELP vllm:prefix_cache_hits Prefix cache hits, in tokens.",
            "# TYPE vllm:prefix_cache_hits counter",
            f'vllm:prefix_cache_hits_total{{engine="0",model_name="{model}"}} {counters.hits}',
            f'vllm:prefix_cache_hits_total{{engine="1",model_name="{model}"}} 0.0',
            "# HELP lmcache:num_stored_tokens Tokens stored by LMCache.",
            "# TYPE lmcache:num_stored_tokens counter",
            f"lmcache:num_stored_tokens_total {counters.stored}",
            f"lmcache:num_stored_tokens_created {time.time():.3f}",
        ]
        for metric, (total, count) in counters.phases.items():
            lines += [f"# TYPE {metric} histogram", f'{metric}_bucket{{engine="0",le="+Inf"}} {count}',
                      f'{metric}_sum{{engine="0"}} {total}', f'{metric}_count{{engine="0"}} {count}']
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def timings(_: web.Request) -> web.Response:
        return web.json_response(counters.timings)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/completions", generate)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/timings", timings)
    return app


class FakeOpenAIServer:
    """Runs the test double on 127.0.0.1 (a free port) in its own process.

    Its own process, not a thread: the client under test must not share a GIL (and a busy
    2-core CI machine's scheduling) with the server whose delays it measures.
    """

    def __init__(self, *, model: str = "fake", startup_timeout_s: float = 30.0, **defaults: Any) -> None:
        self.model = model
        self.defaults = Defaults(**defaults)
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def timings(self) -> dict[str, dict[str, float]]:
        """Per X-Request-Id, the monotonic times the double received the request and wrote its first token."""
        # Imported here: the server process runs this file as a script and needs none of the plugin.
        from pytest_mooncake.runtime.probes import http_get_text

        return json.loads(http_get_text(f"http://127.0.0.1:{self.port}/debug/timings"))

    def __enter__(self) -> FakeOpenAIServer:
        knobs = [f"--{name.replace('_', '-')}={value}" for name, value in vars(self.defaults).items()]
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--port=0", f"--model={self.model}", *knobs],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        ready = threading.Event()
        line: list[str] = []

        def read_banner() -> None:
            assert self._process is not None and self._process.stdout is not None
            line.append(self._process.stdout.readline())
            ready.set()

        threading.Thread(target=read_banner, daemon=True).start()
        if not ready.wait(self.startup_timeout_s) or not line[0].startswith("READY "):
            self.__exit__()
            raise RuntimeError(f"the fake OpenAI server did not print READY within {self.startup_timeout_s} s: {line!r}")
        self.port = int(line[0].split()[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


def main() -> None:
    parser = argparse.ArgumentParser(description="Known-delay OpenAI-compatible streaming server (a test double).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="fake")
    for name, value in vars(Defaults()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(value), default=value)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop when it is installed")
    args = parser.parse_args()
    defaults = Defaults(**{name: getattr(args, name) for name in vars(Defaults())})

    async def serve() -> None:
        runner = web.AppRunner(make_app(defaults, Counters(), args.model), access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
        await site.start()
        print(f"READY {runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    if args.uvloop:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main()

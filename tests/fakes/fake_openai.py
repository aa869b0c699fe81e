"""A known-delay OpenAI-compatible streaming server: a test double for our measurement code.

``/v1/completions`` and ``/v1/chat/completions`` stream ``tokens`` chunks: the first after ``ttft`` seconds, the next
every ``itl`` seconds, then a usage chunk. ``mode`` plants a fault: ``http500``,
``wrong_model`` (404), ``plain_json`` (a non-streaming reply), ``cut`` (the stream stops
mid-way) or ``empty`` (HTTP 200 with zero completion tokens).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Behaviour:
    ttft: float = 0.05
    itl: float = 0.01
    tokens: int = 4
    cached: int = 0
    mode: str = "ok"


def _chunk(text: str, usage: dict[str, object] | None = None, chat: bool = False) -> bytes:
    choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
    body = {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0, "model": "fake",
            "choices": [] if usage else [{**choice, "finish_reason": None, "logprobs": None}], "usage": usage}
    return f"data: {json.dumps(body)}\n\n".encode()


def make_app(behaviour: Behaviour) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        if behaviour.mode == "http500":
            return web.json_response({"error": {"message": "engine exploded"}}, status=500)
        if behaviour.mode == "wrong_model" or payload["model"] != "fake":
            return web.json_response({"error": {"message": f"The model `{payload['model']}` does not exist."}}, status=404)
        if behaviour.mode == "plain_json":
            return web.json_response({"choices": [{"text": "hi"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chat = "messages" in payload
        prompt_tokens = len(payload["prompt"]) if isinstance(payload.get("prompt"), list) else 1
        produced = 0 if behaviour.mode == "empty" else behaviour.tokens
        for index in range(produced):
            await asyncio.sleep(behaviour.ttft if index == 0 else behaviour.itl)
            await response.write(_chunk(f"t{index}", chat=chat))
            if behaviour.mode == "cut" and index == 1:
                request.transport.close()
                return response
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": produced, "total_tokens": prompt_tokens + produced,
                 "prompt_tokens_details": {"cached_tokens": behaviour.cached}}
        await response.write(_chunk("", usage, chat=chat))
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    return app


class FakeOpenAIServer:
    """Runs the app on 127.0.0.1 in a background thread."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(make_app(self.behaviour))
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

"""The proxy in front of spawned vLLM instances, against test doubles: relay, prefill/decode order, vLLM's PD protocol."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import port_for
import pytest
from aiohttp import web

from pytest_mooncake.runtime.executor import ServiceProcess
from pytest_mooncake.runtime.probes import HTTPProbe, http_request
from pytest_mooncake.serving import ClientConfig, Concurrency, RequestSpec, run_requests

from .fake_openai_server import FakeOpenAIServer

LOOPBACK = "127.0.0.1"


class RecordingUpstream:
    """TEST DOUBLE of one vLLM instance: records every JSON body; answers a non-streamed completion
    with ``cached`` cached tokens, a streamed one with two chunks; serves a bootstrap ``/query``."""

    def __init__(self, name: str, cached: int = 0) -> None:
        self.name, self.cached = name, cached
        self.bodies: list[dict[str, Any]] = []
        self.port = int(port_for.select_random())
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        usage = {"prompt_tokens": 8, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": self.cached}}
        if not body.get("stream"):
            return web.json_response({"choices": [{"text": f" {self.name}"}], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for text in (f" {self.name}0", f" {self.name}1"):
            await response.write(f"data: {json.dumps({'choices': [{'text': text}]})}\n\n".encode())
        await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    async def _query(self, _: web.Request) -> web.Response:
        return web.json_response({"0": {"engine_id": f"engine-{self.name}", "tp": {}}})

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/query", self._query)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, LOOPBACK, self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> RecordingUpstream:
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(10), f"{self.name} did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


@contextmanager
def proxy(tmp_path: Any, *args: str) -> Iterator[str]:
    port = int(port_for.select_random())
    process = ServiceProcess("proxy", [sys.executable, "-m", "pytest_mooncake.endpoints.proxy", f"--port={port}", *args],
                             HTTPProbe(f"http://{LOOPBACK}:{port}/health", status=r"^(200|503)$"),
                             tmp_path / "proxy.log", timeout=30)
    process.start()
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.stop()


def _spec(i: int = 0, **extra: Any) -> RequestSpec:
    return RequestSpec(f"r{i}", prompt=(1, 2, 3, 4), max_tokens=4, extra_body={"min_tokens": 2, **extra})


def test_one_upstream_is_relayed_as_it_is(tmp_path: Any) -> None:
    with FakeOpenAIServer(ttft=0.02, itl=0.005, tokens=5, cached=3) as fake, \
            proxy(tmp_path, f"--upstream={fake.base_url.removesuffix('/v1')}") as url:
        direct = run_requests(ClientConfig(fake.base_url, fake.model), [_spec(1)], Concurrency(1))
        relayed = run_requests(ClientConfig(url + "/v1", fake.model), [_spec(2)], Concurrency(1))
        assert [r.error for r in direct + relayed] == [None, None]
        assert relayed[0].text == direct[0].text and relayed[0].content_chunks == direct[0].content_chunks == 5
        assert relayed[0].cached_tokens == 3 and relayed[0].decode_cached_tokens is None
        wrong = http_request(url + "/v1/completions", method="POST", timeout=10,
                             body=json.dumps({"model": "nope", "prompt": [1], "max_tokens": 1, "stream": True}),
                             headers={"Content-Type": "application/json"})
        assert wrong.status == 404 and "The model `nope` does not exist." in wrong.body


def test_prefill_then_decode(tmp_path: Any) -> None:
    with RecordingUpstream("p", cached=128) as prefill, RecordingUpstream("d", cached=256) as decode, \
            proxy(tmp_path, f"--prefill={prefill.url}", f"--decode={decode.url}") as url:
        [record] = run_requests(ClientConfig(url + "/v1", "m"), [_spec()], Concurrency(1))
        assert record.error is None and record.text == " d0 d1"
        # The prefiller computes the prompt for one token, unstreamed; the decoder gets the request as sent.
        [sent_p] = prefill.bodies
        assert (sent_p["max_tokens"], sent_p["stream"], sent_p["min_tokens"], "stream_options" in sent_p) == (1, False, 1, False)
        assert sent_p["prompt"] == [1, 2, 3, 4] and "kv_transfer_params" not in sent_p
        [sent_d] = decode.bodies
        assert (sent_d["max_tokens"], sent_d["stream"], sent_d["min_tokens"]) == (4, True, 2)
        # What the prefill reused decides whether the prompt was cold; the decoder's load is kept beside it.
        assert (record.cached_tokens, record.decode_cached_tokens) == (128, 256)
        assert http_request(url + "/health", timeout=10).status == 200
    with RecordingUpstream("p") as prefill, proxy(tmp_path, f"--prefill={prefill.url}",
                                                  f"--decode=http://{LOOPBACK}:{port_for.select_random()}") as url:
        health = http_request(url + "/health", timeout=10)
        assert health.status == 503 and "decode" in health.body
        down = http_request(url + "/v1/completions", method="POST", timeout=10, body=json.dumps({"prompt": [1]}),
                            headers={"Content-Type": "application/json"})
        assert down.status == 502 and "proxy: upstream http://127.0.0.1:" in down.body


def test_vllm_mooncake_connector_protocol(tmp_path: Any) -> None:
    with RecordingUpstream("p") as prefill, RecordingUpstream("d") as decode, \
            proxy(tmp_path, f"--prefill={prefill.url}", f"--decode={decode.url}", f"--bootstrap={prefill.url}") as url:
        [record] = run_requests(ClientConfig(url + "/v1", "m"), [_spec()], Concurrency(1))
        assert record.error is None
        [sent_p], [sent_d] = prefill.bodies, decode.bodies
        assert sent_p["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False,
                                                "transfer_id": sent_d["kv_transfer_params"]["transfer_id"]}
        assert sent_d["kv_transfer_params"] == {
            "do_remote_prefill": True, "do_remote_decode": False, "transfer_id": sent_p["kv_transfer_params"]["transfer_id"],
            "remote_engine_id": "engine-p", "remote_bootstrap_addr": prefill.url.removeprefix("http://")}


def test_bad_arguments_are_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_mooncake.endpoints.proxy", "--port=1", "--prefill=http://x"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "give --upstream URL, or both --prefill URL and --decode URL" in done.stderr


@pytest.mark.parametrize("body", ["not json", "[1, 2]"])
def test_a_body_that_is_no_json_object_is_a_400(tmp_path: Any, body: str) -> None:
    with RecordingUpstream("p") as prefill, RecordingUpstream("d") as decode, \
            proxy(tmp_path, f"--prefill={prefill.url}", f"--decode={decode.url}") as url:
        reply = http_request(url + "/v1/completions", method="POST", timeout=10, body=body,
                             headers={"Content-Type": "application/json"})
        assert reply.status == 400 and "not a JSON object" in reply.body and prefill.bodies == []

"""The HTTP proxy in front of spawned vLLM instances: one upstream, or prefill then decode.

    python -m pytest_mooncake.endpoints.proxy --port P [--netns NAME] --upstream URL
    python -m pytest_mooncake.endpoints.proxy --port P [--netns NAME] --prefill URL --decode URL [--bootstrap URL]

Mooncake topologies run vLLM inside the cluster's private network namespace, which holds
nothing but loopback. The proxy makes its listening socket in the namespace it starts in
(the root one) and only then enters ``--netns``: pytest reaches it on the root loopback,
and every upstream connection is made inside the cluster's namespace.

- ``--upstream``: every request passes through as it is; streams are relayed chunk by chunk,
  and an upstream error keeps its status and body.
- ``--prefill/--decode`` (disaggregation through the store: a ``kv_producer`` and a
  ``kv_consumer``): a completion first goes to the prefiller with ``max_tokens=1`` and no
  streaming, which stores the prompt's KV in Mooncake; then the request as given goes to
  the decoder, which loads that KV, and the decoder's answer is the proxy's. The prefiller's
  reuse (``usage.prompt_tokens_details.cached_tokens``) comes back in the
  ``X-Prefill-Cached-Tokens`` header: the decoder always loads the whole stored prompt, so
  only the prefiller tells whether a prompt was cold. ``/health`` is 200 when both
  instances answer 200; ``/reset_prefix_cache`` goes to both; every other path (``/metrics``,
  ``/tokenize``, ``/v1/models``) to the decoder.
- ``--bootstrap`` (vLLM's ``MooncakeConnector``, which transfers KV directly from prefiller to
  decoder): vLLM's proxy protocol. Both requests carry ``kv_transfer_params`` with one
  ``transfer_id``; the decoder's also name the prefiller's engine (``remote_engine_id``, read
  from the prefiller's bootstrap server ``/query``) and ``remote_bootstrap_addr``.
An upstream that cannot be reached is a 502 whose JSON error names it.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_mooncake.serving.client import PREFILL_CACHED_HEADER

_COMPLETIONS = ("/v1/completions", "/v1/chat/completions")
# Headers that describe one hop, not the message: aiohttp sets its own.
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "host", "keep-alive", "content-encoding"}


def _passed(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() not in _HOP_BY_HOP}


def prefill_payload(payload: Mapping[str, Any], transfer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The prefiller's share of a completion: compute the prompt (and store its KV), one token, no stream."""
    body = {key: value for key, value in payload.items() if key not in ("stream", "stream_options")}
    body.update(max_tokens=1, stream=False)
    if "min_tokens" in body:
        body["min_tokens"] = min(int(body["min_tokens"]), 1)
    if "max_completion_tokens" in body:
        body["max_completion_tokens"] = 1
    if transfer is not None:
        body["kv_transfer_params"] = {"do_remote_decode": True, "do_remote_prefill": False,
                                      "transfer_id": transfer["transfer_id"]}
    return body


def decode_payload(payload: Mapping[str, Any], transfer: Mapping[str, Any]) -> dict[str, Any]:
    """The decoder's request under vLLM's MooncakeConnector protocol: pull the KV of ``transfer``."""
    return {**payload, "kv_transfer_params": {"do_remote_prefill": True, "do_remote_decode": False, **transfer}}


def _cached(usage_body: bytes) -> str:
    try:
        details = json.loads(usage_body).get("usage", {}).get("prompt_tokens_details") or {}
    except ValueError:
        return "0"
    return str(int(details.get("cached_tokens") or 0))


def make_app(upstreams: Mapping[str, str], timeout_s: float) -> Any:
    """The aiohttp application; ``upstreams`` has ``upstream``, or ``prefill`` and ``decode``."""
    from aiohttp import ClientError, ClientSession, ClientTimeout, web

    pd = "prefill" in upstreams
    main = upstreams["decode"] if pd else upstreams["upstream"]
    sessions: dict[str, ClientSession] = {}

    async def open_session(app: web.Application) -> None:
        sessions["s"] = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s),
                                      auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await sessions["s"].close()

    def unreachable(url: str, exc: BaseException) -> web.Response:
        message = f"proxy: upstream {url} failed: {type(exc).__name__}: {exc}"
        return web.json_response({"error": {"message": message, "type": "BadGateway", "code": 502}}, status=502)

    async def relay(request: web.Request, base: str, body: bytes, extra: Mapping[str, str] = {}) -> web.StreamResponse:
        url = base + request.path_qs
        try:
            async with sessions["s"].request(request.method, url, data=body, headers=_passed(request.headers)) as reply:
                response = web.StreamResponse(status=reply.status, headers={**_passed(reply.headers), **extra})
                await response.prepare(request)
                async for chunk in reply.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (ClientError, TimeoutError) as exc:
            return unreachable(url, exc)

    async def transfer() -> dict[str, str]:
        """A new transfer of vLLM's MooncakeConnector protocol, naming the prefiller's engine."""
        async with sessions["s"].get(upstreams["bootstrap"] + "/query") as reply:
            engines = await reply.json(content_type=None)
        engine = next(iter(engines.values()))
        address = upstreams["bootstrap"].split("://", 1)[-1]
        return {"transfer_id": str(uuid.uuid4()), "remote_engine_id": str(engine["engine_id"]),
                "remote_bootstrap_addr": address}

    async def prefill(request: web.Request, payload: Mapping[str, Any],
                      params: Mapping[str, Any] | None) -> web.StreamResponse | dict[str, str]:
        """Run the prefill; its error answer, or the headers the decoder's answer carries."""
        url = upstreams["prefill"] + request.path_qs
        try:
            async with sessions["s"].post(url, json=prefill_payload(payload, params), headers=_passed(request.headers)) as reply:
                answer = await reply.read()
                if reply.status != 200:
                    return web.Response(status=reply.status, body=answer, headers=_passed(reply.headers))
        except (ClientError, TimeoutError) as exc:
            return unreachable(url, exc)
        return {PREFILL_CACHED_HEADER: _cached(answer)}

    async def health(request: web.Request) -> web.Response:
        states = {}
        for role, base in upstreams.items():
            if role == "bootstrap":
                continue
            try:
                async with sessions["s"].get(base + "/health") as reply:
                    states[role] = reply.status
            except (ClientError, TimeoutError) as exc:
                states[role] = f"{type(exc).__name__}: {exc}"
        ok = all(state == 200 for state in states.values())
        return web.json_response({"upstreams": states}, status=200 if ok else 503)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not pd:
            return await relay(request, main, body)
        if request.path == "/reset_prefix_cache":
            await relay(request, upstreams["prefill"], body)
        if request.method == "POST" and request.path in _COMPLETIONS:
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                return web.json_response({"error": {"message": "proxy: the request body is not a JSON object",
                                                    "type": "BadRequest", "code": 400}}, status=400)
            try:
                params = await transfer() if "bootstrap" in upstreams else None
            except (ClientError, TimeoutError, ValueError, StopIteration, KeyError) as exc:
                return unreachable(upstreams["bootstrap"] + "/query", exc)
            outcome = await prefill(request, payload, params)
            if isinstance(outcome, web.StreamResponse):
                return outcome
            if params is not None:
                body = json.dumps(decode_payload(payload, params)).encode()
            return await relay(request, main, body, outcome)
        return await relay(request, main, body)

    app = web.Application(client_max_size=1 << 30)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _enter(netns: str) -> None:
    from pytest_mooncake.runtime.netns import _libc_setns

    with open(f"/var/run/netns/{netns}", "rb") as target:
        _libc_setns(target.fileno())


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mooncake.endpoints.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--netns", help="network namespace the upstreams live in")
    parser.add_argument("--upstream", help="the one instance to pass requests to")
    parser.add_argument("--prefill", help="the kv_producer instance")
    parser.add_argument("--decode", help="the kv_consumer instance")
    parser.add_argument("--bootstrap", help="the prefiller's MooncakeConnector bootstrap server (vLLM's PD protocol)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds an upstream may stay silent")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if bool(args.upstream) == bool(args.prefill or args.decode) or bool(args.prefill) != bool(args.decode):
        parser.error("give --upstream URL, or both --prefill URL and --decode URL")
    if args.bootstrap and not args.prefill:
        parser.error("--bootstrap belongs to a prefill/decode pair")
    upstreams = {"upstream": args.upstream} if args.upstream else {"prefill": args.prefill, "decode": args.decode}
    if args.bootstrap:
        upstreams["bootstrap"] = args.bootstrap
    from aiohttp import web

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    if args.netns:
        _enter(args.netns)  # after bind: the listener stays where pytest can reach it
    print(f"proxy on {args.host}:{args.port} -> {upstreams}", flush=True)
    web.run_app(make_app({k: v.rstrip("/") for k, v in upstreams.items()}, args.timeout), sock=listener,
                print=None, handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The one synchronous HTTP helper: JSON payloads, and GETs that must succeed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pytest_mooncake.runtime.probes import http_get_text, http_request


class _Echo(BaseHTTPRequestHandler):
    """GET /ok answers 200, any other GET 503; POST echoes its content type and body."""

    def do_GET(self) -> None:
        self._reply(200 if self.path == "/ok" else 503, b"fine" if self.path == "/ok" else b"overloaded")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(200, json.dumps({"type": self.headers["Content-Type"], "body": json.loads(body)}).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # no access log: it would crowd a failing test's output
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_payload_goes_as_json(server_url: str) -> None:
    reply = http_request(server_url + "/x", method="POST", payload={"prompt": [1, 2]}, headers={"X-A": "b"})
    assert json.loads(reply.body) == {"type": "application/json", "body": {"prompt": [1, 2]}}
    with pytest.raises(ValueError, match="body or payload"):
        http_request(server_url, method="POST", body="{}", payload={})


def test_get_text_returns_the_body_or_says_what_failed(server_url: str) -> None:
    assert http_get_text(server_url + "/ok") == "fine"
    with pytest.raises(OSError, match=rf"GET {server_url}/busy answered HTTP 503: overloaded"):
        http_get_text(server_url + "/busy")

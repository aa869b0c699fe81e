"""TEST DOUBLE: the HTTP face of a ``mooncake_master``, for testing how attach mode reads it.

It is not a master: it stores nothing. One port answers what attach mode probes and reads:
the RPC port (a TCP connect), ``/metrics`` (the master's Prometheus samples), ``/health`` and
the HTTP metadata server (404 for every key, as for a key nobody wrote). ``master_key_count``
stays at ``keys`` (a master whose instances store nothing), or, with ``grow`` > 0, rises by
``grow`` at every scrape (a master that receives KV).

In a test: ``with FakeMaster() as master: master.options`` gives the ``--mooncake-*`` flags.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeMaster:
    def __init__(self, *, keys: int = 100, grow: int = 0, capacity: int = 1 << 30, allocated: int = 1 << 20) -> None:
        self.keys, self.grow, self.capacity, self.allocated = keys, grow, capacity, allocated
        self.scrapes = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def options(self) -> list[str]:
        """The command-line flags that attach a pytest run to this double."""
        url = f"http://127.0.0.1:{self.port}"
        return [f"--mooncake-master=127.0.0.1:{self.port}", f"--mooncake-metrics-url={url}",
                f"--mooncake-metadata-url={url}/metadata"]

    def metrics(self) -> str:
        with self._lock:
            self.scrapes += 1
            self.keys += self.grow
            keys = self.keys
        return "\n".join([
            "# TYPE master_key_count gauge", f"master_key_count {keys}",
            "# TYPE master_evicted_key_count counter", "master_evicted_key_count 0",
            "# TYPE master_total_capacity_bytes gauge", f"master_total_capacity_bytes {self.capacity}",
            "# TYPE master_allocated_bytes gauge", f"master_allocated_bytes {self.allocated}",
        ]) + "\n"

    def __enter__(self) -> FakeMaster:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/metrics":
                    self._send(200, double.metrics(), "text/plain")
                elif self.path == "/health":
                    self._send(200, '{"service_ready": true}', "application/json")
                else:
                    self._send(404, "metadata not found", "text/plain")

            def _send(self, status: int, body: str, content_type: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

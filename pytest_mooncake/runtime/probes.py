"""Readiness probes shared by spawned services, attached services and the doctor.

A probe answers one question, "is it ready?", and says why not. The same probe
objects run before an attached service is handed over, so attach mode and
spawn mode agree on what "ready" means.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from pytest_mooncake.runtime.netns import NetworkNamespace


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


class Probe(Protocol):
    @property
    def description(self) -> str: ...

    def check(self) -> ProbeResult: ...


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str


def http_request(
    url: str,
    *,
    method: str = "GET",
    timeout: float = 5.0,
    netns: NetworkNamespace | None = None,
    headers: dict[str, str] | None = None,
    body: str | None = None,
    payload: object = None,
) -> HttpResponse:
    """One HTTP request; inside ``netns`` when given. ``payload`` is sent as JSON (instead of
    ``body``). Any status comes back; raises OSError on transport errors."""
    if payload is not None:
        if body is not None:
            raise ValueError(f"{method} {url}: give body or payload, not both")
        body, headers = json.dumps(payload), {"Content-Type": "application/json", **(headers or {})}
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        with netns.entered() if netns else nullcontext():
            conn.connect()
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return HttpResponse(response.status, response.read().decode("utf-8", "replace"))
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP response from {url}: {exc!r}") from exc
    finally:
        conn.close()


def http_get_text(
    url: str, *, timeout: float = 10.0, netns: NetworkNamespace | None = None, headers: dict[str, str] | None = None
) -> str:
    """The body of a GET that must succeed (2xx); otherwise OSError saying which URL failed and how."""
    try:
        response = http_request(url, timeout=timeout, netns=netns, headers=headers)
    except OSError as exc:
        where = f" in network namespace {netns.name}" if netns else ""
        raise OSError(f"GET {url}{where} failed: {exc}; is the server up and listening there?") from exc
    return expect_2xx(response, url)


def expect_2xx(response: HttpResponse, url: str) -> str:
    """The body of a 2xx answer to a GET of ``url``; otherwise OSError naming the URL and the status."""
    if not 200 <= response.status < 300:
        raise OSError(f"GET {url} answered HTTP {response.status}: {response.body[:200].strip()}")
    return response.body


@dataclass(frozen=True)
class TCPProbe:
    host: str
    port: int
    netns: NetworkNamespace | None = None
    timeout: float = 3.0

    @property
    def description(self) -> str:
        return f"TCP connect to {self.host}:{self.port}"

    def check(self) -> ProbeResult:
        try:
            # A socket belongs to the namespace it is created in.
            with self.netns.entered() if self.netns else nullcontext():
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            return ProbeResult(False, str(exc) or type(exc).__name__)
        sock.close()
        return ProbeResult(True, "accepts connections")


@dataclass(frozen=True)
class HTTPProbe:
    url: str
    status: str = r"^2\d\d$"
    body_pattern: str | None = None
    netns: NetworkNamespace | None = None
    timeout: float = 3.0
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def description(self) -> str:
        return f"HTTP GET {self.url}"

    def check(self) -> ProbeResult:
        try:
            response = http_request(
                self.url, timeout=self.timeout, netns=self.netns, headers=dict(self.headers)
            )
        except OSError as exc:
            return ProbeResult(False, str(exc) or type(exc).__name__)
        if not re.match(self.status, str(response.status)):
            return ProbeResult(False, f"HTTP {response.status}: {response.body[:200].strip()}")
        if self.body_pattern and not re.search(self.body_pattern, response.body):
            return ProbeResult(False, f"HTTP {response.status} but no match for {self.body_pattern!r}")
        return ProbeResult(True, f"HTTP {response.status}")


@dataclass(frozen=True)
class LogBannerProbe:
    """Ready once a line matching ``pattern`` appears in the service's log."""

    log_path: Path
    pattern: str

    @property
    def description(self) -> str:
        return f"log line matching {self.pattern!r} in {self.log_path}"

    def check(self) -> ProbeResult:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError as exc:
            return ProbeResult(False, str(exc))
        if re.search(self.pattern, text, re.MULTILINE):
            return ProbeResult(True, "banner seen")
        return ProbeResult(False, "banner not seen yet")


@dataclass(frozen=True)
class AllOf:
    """Ready when every probe is; reports the first that is not."""

    probes: tuple[Probe, ...]

    @property
    def description(self) -> str:
        return " and ".join(probe.description for probe in self.probes)

    def check(self) -> ProbeResult:
        for probe in self.probes:
            result = probe.check()
            if not result.ok:
                return ProbeResult(False, f"{probe.description}: {result.detail}")
        return ProbeResult(True, "all probes pass")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> float:
    """Poll ``condition`` every ``interval`` s; the seconds it took, or AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started

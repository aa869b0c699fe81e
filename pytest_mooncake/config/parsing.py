"""Parsers for every setting value, shared by the CLI, ini, env and YAML routes.

Each parser takes the raw value (a string from the CLI, ini or environment, or a
typed value from YAML) and returns the typed value, or raises ``ValueError`` with
the valid forms in its message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class HostPort:
    """A ``host:port`` pair."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoint(value: object) -> HostPort:
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port in 1-65535, e.g. 10.0.0.5:50051")
    return HostPort(host, int(port))


def _http_url(value: object, example: str) -> str:
    text = str(value).strip()
    from urllib.parse import urlsplit  # every pytest run imports this module; few parse a URL

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, e.g. {example}")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError as exc:
        raise ValueError(f"bad port in URL ({exc}); expected e.g. {example}") from None
    return text.rstrip("/")


def parse_url(value: object) -> str:
    """The master's admin/metrics base URL."""
    return _http_url(value, "http://10.0.0.5:9003")


def parse_openai_url(value: object) -> str:
    """An OpenAI-compatible server's base URL."""
    return _http_url(value, "http://10.0.0.5:8000/v1")


def parse_metadata_url(value: object) -> str:
    """The Transfer Engine metadata server: P2PHANDSHAKE or an http(s) URL."""
    text = str(value).strip()
    if text.upper() == "P2PHANDSHAKE":
        return "P2PHANDSHAKE"
    try:
        return parse_url(text)
    except ValueError:
        raise ValueError(
            "expected P2PHANDSHAKE or an http(s) URL, e.g. http://10.0.0.5:8080/metadata"
        ) from None


def parse_size(value: object) -> int:
    """Bytes, with Mooncake's binary units: 64MiB, 64MB and 64m all mean 64 * 2**20."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE_RE.match(str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError("expected a byte size such as 67108864, 64MiB, 64MB or 1GiB (binary units)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(value: object) -> float:
    """Seconds; accepts plain numbers (seconds) or the suffixes ms, s, m, h."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError("expected a duration such as 30, 30s, 500ms or 2m")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("expected a duration above zero, such as 30s or 500ms")
    return seconds


@dataclass(frozen=True)
class LatencyLimit:
    """A latency limit: absolute (``ms``) or a multiple of a reference latency measured in the run
    (``factor``), e.g. of the baseline's unloaded TTFT, so one setting fits a fast and a slow host."""

    ms: float | None = None
    factor: float | None = None

    def __str__(self) -> str:
        return f"{self.factor:g}x" if self.factor is not None else f"{self.ms:g}ms"

    def resolve(self, reference_ms: float) -> float:
        """The limit in milliseconds, given the reference latency."""
        return self.ms if self.ms is not None else float(self.factor) * reference_ms  # type: ignore[arg-type]


def parse_latency_limit(value: object) -> LatencyLimit:
    """``500ms``, ``0.5s`` (a duration) or ``4x`` (times the reference latency)."""
    text = str(value).strip().lower()
    if text.endswith("x"):
        try:
            factor = float(text[:-1])
        except ValueError:
            factor = 0.0
        if factor > 0:
            return LatencyLimit(factor=factor)
        raise ValueError("expected a positive multiple such as 4x, or a duration such as 500ms")
    try:
        seconds = parse_positive_duration(value)
    except ValueError:
        raise ValueError("expected a duration such as 500ms or 1.5s, or a multiple of the baseline's unloaded "
                         "latency such as 4x") from None
    return LatencyLimit(ms=seconds * 1000.0)


def parse_int(value: object, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number >= {minimum}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number >= {minimum}") from None
    if number < minimum:
        raise ValueError(f"expected a whole number >= {minimum}")
    return number


def parse_positive_int(value: object) -> int:
    return parse_int(value, minimum=1)


def parse_rounds(value: object) -> int:
    """Measurement rounds: round 1 is cold, every later one a cache-hit round, so at least 2."""
    try:
        return parse_int(value, minimum=2)
    except ValueError:
        raise ValueError("expected a whole number >= 2 (round 1 is cold, later rounds are cache hits)") from None


# Mooncake's smallest segment: a store node mounting less fails to start.
MIN_SEGMENT_SIZE = 16 * 2**20


def parse_segment_size(value: object) -> int:
    size = parse_size(value)
    if size < MIN_SEGMENT_SIZE:
        raise ValueError("expected a size of at least 16MiB (Mooncake's smallest segment), e.g. 64MiB or 1GiB")
    return size


def parse_ratio(value: object) -> float:
    """A share between 0 and 1 inclusive."""
    try:
        ratio = parse_float(value)
    except ValueError:
        ratio = -1.0
    if not 0 <= ratio <= 1:
        raise ValueError("expected a number from 0 to 1, e.g. 0.5")
    return ratio


def parse_optional_positive_int(value: object) -> int | None:
    """``null``/``none``/empty mean "no limit" (the guides' ``concurrency: null``)."""
    if value is None or str(value).strip().lower() in ("", "none", "null"):
        return None
    return parse_positive_int(value)


def parse_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, e.g. 0.0")
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError("expected a number, e.g. 0.0") from None


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"expected a yes/no value: one of {', '.join(_TRUE + _FALSE)}")
    return text in _TRUE


def parse_path(value: object) -> Path:
    return Path(str(value)).expanduser()


def parse_text(value: object) -> str:
    return str(value).strip()


def parse_names(value: object) -> tuple[str, ...]:
    """A comma-separated string or a YAML list of names."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    bad = [name for name in names if not re.fullmatch(r"[A-Za-z0-9_.-]+", name)]
    if bad:
        raise ValueError(f"expected comma-separated names of letters, digits, _ . - (bad: {bad})")
    return names


def choice(*allowed: str) -> Callable[[object], str]:
    """A parser that accepts one of ``allowed`` (case-insensitive)."""

    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of: {', '.join(allowed)}")
        return text

    return parse


# The metrics --mooncake-compare-fail may gate; baseline.METRICS reads them
# (tests/test_options_units.py keeps the two in step).
COMPARE_METRICS = ("ttft_mean", "ttft_p90", "ttft_p99", "tpot_mean", "e2e_p90", "throughput", "output_throughput",
                   "hit_rate")
_RULE = re.compile(r"^(\w+):(\d+(?:\.\d+)?)%$")


def parse_rules(value: object) -> Mapping[str, float]:
    """``ttft_p90:10%,throughput:5%`` -> {"ttft_p90": 0.10, "throughput": 0.05}."""
    rules: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in str(value).split(","))):
        match = _RULE.match(item)
        if not match or match.group(1) not in COMPARE_METRICS:
            raise ValueError(f"expected METRIC:PERCENT% with METRIC one of {', '.join(COMPARE_METRICS)} (got {item!r})")
        rules[match.group(1)] = float(match.group(2)) / 100
    return MappingProxyType(rules)


# The evaluation report's formats: --mooncake-report and `pytest-mooncake report --format`.
REPORT_FORMATS = ("md", "html")


def parse_formats(value: object) -> tuple[str, ...]:
    """``md,html`` -> ("md", "html"); empty -> ()."""
    formats = tuple(dict.fromkeys(part.strip() for part in str(value).split(",") if part.strip()))
    unknown = [f for f in formats if f not in REPORT_FORMATS]
    if unknown:
        raise ValueError(f"unknown report format {', '.join(unknown)}; expected md, html or md,html")
    return formats

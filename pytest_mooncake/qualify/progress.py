"""A live progress line for long rounds and trace replays, through pytest's terminal reporter.

    progress = Progress(request.config, "high_reuse hit round", total=30)
    progress.update(ttft_s=0.41)          # one request done
    progress.update(error=True)           # one request failed
    progress.close()

On a terminal the line is rewritten in place; in CI logs a line is written at every quarter.
Nothing is written under ``-q``.
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import AbstractContextManager, nullcontext

import pytest

from pytest_mooncake.serving import RequestRecord

__all__ = ["Progress"]

# Rewrites are throttled: a fast round would otherwise spend its time repainting.
_MIN_INTERVAL_S = 0.2
_LOG_STEPS = 4


class Progress:
    def __init__(self, config: pytest.Config, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.errors = 0
        self._ttfts: list[float] = []
        self._lock = threading.Lock()
        self._config = config
        self._reporter = config.pluginmanager.get_plugin("terminalreporter")
        self._quiet = self._reporter is None or config.get_verbosity() < 0
        self._live = not self._quiet and bool(self._reporter.isatty)
        self._last_paint = 0.0
        self._logged_step = 0
        self._logged_done = 0
        self._closed = False

    def line(self) -> str:
        p50 = f"{statistics.median(self._ttfts) * 1000:.0f} ms" if self._ttfts else "n/a"
        return f"[{self.label}] {self.done}/{self.total} done, TTFT p50 {p50}, {self.errors} errors"

    def update(self, *, ttft_s: float | None = None, error: bool = False) -> None:
        """Count one finished request; ``ttft_s`` when it produced a first token."""
        with self._lock:
            self.done += 1
            self.errors += bool(error)
            if ttft_s is not None:
                self._ttfts.append(ttft_s)
            self._paint(final=False)

    def record(self, record: RequestRecord) -> None:
        """Count a request of the serving engine as it finishes (its ``on_record`` callback)."""
        self.update(ttft_s=record.ttft_s, error=not record.ok)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._paint(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _paint(self, *, final: bool) -> None:
        if self._quiet:
            return
        if self._live:
            now = time.monotonic()
            if not final and now - self._last_paint < _MIN_INTERVAL_S:
                return
            self._last_paint = now
            with self._uncaptured():
                self._reporter.rewrite(self.line(), erase=True)
                if final:
                    self._reporter.write_line("")
            return
        step = self.done * _LOG_STEPS // max(self.total, 1)
        if step > self._logged_step or (final and self.done != self._logged_done):
            self._logged_step, self._logged_done = step, self.done
            with self._uncaptured():
                self._reporter.write_line(self.line())

    def _uncaptured(self) -> AbstractContextManager[object]:
        capture = self._config.pluginmanager.get_plugin("capturemanager")
        return capture.global_and_fixture_disabled() if capture else nullcontext()

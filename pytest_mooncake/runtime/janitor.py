"""A watchdog process that cleans up after pytest however pytest ends.

Fixture finalizers stop what we spawn on a normal run, on a failed setup and on
Ctrl-C. The janitor covers the rest (SIGKILL, a crash, an OOM kill): pytest
tells it over a pipe which process groups and namespaces it owns; when the pipe
closes with entries still registered, the janitor stops those process groups,
kills whatever is left in those namespaces and deletes them.

Runs as a separate Python process (``ENTRY``); it reads lines ``add pgid N``,
``add netns NAME``, ``del pgid N``, ``del netns NAME`` from stdin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

_GRACE_S = 5.0
# Not `python -m`: the package imports this module first, and runpy warns about that.
ENTRY = "import sys; from pytest_mooncake.runtime.janitor import main; sys.exit(main())"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_all(pids: Iterable[int], sig: int, send: Callable[[int, int], None]) -> None:
    for pid in pids:
        try:
            send(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop(pids: list[int], send: Callable[[int, int], None]) -> None:
    _signal_all(pids, signal.SIGTERM, send)
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    _signal_all(pids, signal.SIGKILL, send)


def _netns_pids(name: str) -> list[int]:
    listed = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10, check=False
    )
    return [int(pid) for pid in listed.stdout.split()]


def clean_up(pgids: set[int], namespaces: set[str]) -> None:
    _stop(sorted(pgids), os.killpg)
    for name in sorted(namespaces):
        _stop(_netns_pids(name), os.kill)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10, check=False)


def main() -> int:
    # Ctrl-C reaches the whole foreground process group; the janitor must outlive
    # pytest's handling of it, so it ignores SIGINT and waits for the pipe to close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pgids: set[int] = set()
    namespaces: set[str] = set()
    for line in sys.stdin:
        verb, kind, value = (line.split() + ["", "", ""])[:3]
        target: set[int] | set[str] = pgids if kind == "pgid" else namespaces
        item: int | str = int(value) if kind == "pgid" else value
        if verb == "add":
            target.add(item)  # type: ignore[arg-type]
        elif verb == "del":
            target.discard(item)  # type: ignore[arg-type]
    if pgids or namespaces:
        clean_up(pgids, namespaces)
    return 0


class Janitor:
    """pytest's side of the pipe; starts the watchdog on first use."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def _send(self, line: str) -> None:
        if self._process is None:
            self._process = subprocess.Popen(
                [sys.executable, "-c", ENTRY],
                stdin=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def watch_group(self, pgid: int) -> None:
        self._send(f"add pgid {pgid}")

    def forget_group(self, pgid: int) -> None:
        self._send(f"del pgid {pgid}")

    def watch_namespace(self, name: str) -> None:
        self._send(f"add netns {name}")

    def forget_namespace(self, name: str) -> None:
        self._send(f"del netns {name}")

    def close(self, timeout: float = 30.0) -> None:
        """Close the pipe; the janitor cleans whatever is still registered, then exits."""
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


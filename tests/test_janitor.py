"""The janitor's protocol, its stop sequence and its cleanup, with the processes and the clock faked.

The real processes (a forking service, a SIGKILLed pytest) are in test_executor.py; here every
call the janitor makes is recorded, so each step of its contract is pinned exactly.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_mooncake.runtime import janitor
from pytest_mooncake.runtime.janitor import ENTRY, Janitor

from .conftest import needs_cluster
from .test_executor import _gone


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` of the janitor: each sleep advances the clock by an exact
    quarter second (the seconds asked for are recorded), so the deadline is hit exactly."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += 0.25


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(janitor.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(janitor.time, "sleep", fake.sleep)
    return fake


def test_alive_tells_a_running_process_from_a_reaped_one(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert janitor._alive(os.getpid()) is True and janitor._alive(child.pid) is False

    def not_ours(pid: int, sig: int) -> None:
        raise PermissionError(pid)

    monkeypatch.setattr(janitor.os, "kill", not_ours)
    assert janitor._alive(1) is True, "a process we may not signal still exists"


def test_signal_all_reaches_every_pid_even_when_some_are_gone() -> None:
    sent: list[tuple[int, int]] = []

    def send(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        if pid == 1:
            raise ProcessLookupError(pid)
        if pid == 2:
            raise PermissionError(pid)

    janitor._signal_all([1, 2, 3], signal.SIGTERM, send)
    assert sent == [(1, signal.SIGTERM), (2, signal.SIGTERM), (3, signal.SIGTERM)]


def test_stop_waits_the_grace_then_kills(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group that ignores SIGTERM gets the whole grace, polled every 0.1 s, then SIGKILL."""
    sent: list[tuple[int, int]] = []
    asked: list[int] = []
    monkeypatch.setattr(janitor, "_GRACE_S", 1.0)
    monkeypatch.setattr(janitor, "_alive", lambda pid: asked.append(pid) or True)
    janitor._stop([7, 8], lambda pid, sig: sent.append((pid, sig)))
    assert sent == [(7, signal.SIGTERM), (8, signal.SIGTERM), (7, signal.SIGKILL), (8, signal.SIGKILL)]
    # Polls at 0, 0.25, 0.5 and 0.75 s of the 1 s grace; at 1 s the grace is over.
    assert clock.sleeps == [0.1] * 4 and set(asked) == {7}


def test_stop_polls_only_while_something_is_alive(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    answers = iter([True, True, True, False])  # the group ends during the third poll
    monkeypatch.setattr(janitor, "_GRACE_S", 5.0)
    monkeypatch.setattr(janitor, "_alive", lambda pid: next(answers))
    janitor._stop([7], lambda pid, sig: sent.append((pid, sig)))
    assert clock.sleeps == [0.1, 0.1, 0.1] and sent == [(7, signal.SIGTERM), (7, signal.SIGKILL)]
    clock.sleeps.clear()
    monkeypatch.setattr(janitor, "_alive", lambda pid: False)
    janitor._stop([7], lambda pid, sig: None)
    assert clock.sleeps == [], "nothing is alive: no waiting"


def test_clean_up_signals_process_groups_then_namespace_members(monkeypatch: pytest.MonkeyPatch) -> None:
    stops: list[tuple[list[int], object]] = []
    commands: list[list[str]] = []
    monkeypatch.setattr(janitor, "_stop", lambda pids, send: stops.append((pids, send)))
    monkeypatch.setattr(janitor, "_netns_pids", lambda name: {"a": [11], "b": [12, 13]}[name])
    monkeypatch.setattr(janitor.subprocess, "run", lambda command, **kwargs: commands.append((command, kwargs)))
    janitor.clean_up({30, 20}, {"b", "a"})
    # Process groups get killpg: a forked worker in the group must not survive its leader.
    assert stops == [([20, 30], os.killpg), ([11], os.kill), ([12, 13], os.kill)]
    quiet = {"capture_output": True, "timeout": 10, "check": False}  # a failed delete must not stop the cleanup
    assert commands == [(["ip", "netns", "delete", "a"], quiet), (["ip", "netns", "delete", "b"], quiet)]


def test_netns_pids_lists_the_members(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, object]]] = []

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0, "12\n345\n", "")

    monkeypatch.setattr(janitor.subprocess, "run", run)
    assert janitor._netns_pids("pmc-x") == [12, 345]
    assert calls == [(["ip", "netns", "pids", "pmc-x"], {"capture_output": True, "text": True, "timeout": 10, "check": False})]


def test_main_cleans_what_is_still_registered_when_the_pipe_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    cleaned: list[tuple[set[int], set[str]]] = []
    monkeypatch.setattr(janitor, "clean_up", lambda pgids, namespaces: cleaned.append((set(pgids), set(namespaces))))
    monkeypatch.setattr(janitor.signal, "signal", lambda sig, handler: cleaned.append((sig, handler)))  # type: ignore[arg-type]
    lines = "add pgid 10\nadd pgid 11\nadd netns n1\nadd netns n2\ndel pgid 10\ndel netns n2\n\nnoise\n"
    monkeypatch.setattr(janitor.sys, "stdin", io.StringIO(lines))
    assert janitor.main() == 0
    # Ctrl-C reaches the janitor too: it must ignore it and outlive pytest.
    assert cleaned == [(signal.SIGINT, signal.SIG_IGN), ({11}, {"n1"})]


@pytest.mark.parametrize(("lines", "left"), [("add pgid 10\n", ({10}, set())), ("add netns n\n", (set(), {"n"}))])
def test_main_cleans_groups_alone_or_namespaces_alone(monkeypatch: pytest.MonkeyPatch, lines: str,
                                                      left: tuple[set[int], set[str]]) -> None:
    cleaned: list[tuple[set[int], set[str]]] = []
    monkeypatch.setattr(janitor, "clean_up", lambda pgids, namespaces: cleaned.append((set(pgids), set(namespaces))))
    monkeypatch.setattr(janitor.signal, "signal", lambda sig, handler: None)
    monkeypatch.setattr(janitor.sys, "stdin", io.StringIO(lines))
    assert janitor.main() == 0 and cleaned == [left]


def test_main_with_nothing_left_cleans_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cleaned: list[object] = []
    monkeypatch.setattr(janitor, "clean_up", lambda *args: cleaned.append(args))
    monkeypatch.setattr(janitor.signal, "signal", lambda sig, handler: None)
    monkeypatch.setattr(janitor.sys, "stdin", io.StringIO("add pgid 10\nadd netns n\ndel netns n\ndel pgid 10\n"))
    assert janitor.main() == 0 and cleaned == []


class FakeWatchdog:
    """Stands in for the watchdog process: records what pytest writes and how it is waited for."""

    def __init__(self, hang: bool = False) -> None:
        self.stdin = io.StringIO()
        self.lines: list[str] = []
        self.waits: list[float | None] = []
        self.killed = False
        self.hang = hang

    def wait(self, timeout: float | None = None) -> int:
        self.waits.append(timeout)
        if self.hang and not self.killed:
            raise subprocess.TimeoutExpired("janitor", timeout or 0)
        return 0

    def kill(self) -> None:
        self.killed = True


def test_the_pipe_carries_one_line_per_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[list[str], dict[str, object]]] = []
    watchdog = FakeWatchdog()
    watchdog.stdin.close = lambda: watchdog.lines.extend(watchdog.stdin.getvalue().splitlines())  # type: ignore[method-assign]

    def popen(command: list[str], **kwargs: object) -> FakeWatchdog:
        started.append((command, kwargs))
        return watchdog

    monkeypatch.setattr(janitor.subprocess, "Popen", popen)
    j = Janitor()
    j.close()
    assert started == [], "nothing registered: no watchdog"
    j.watch_group(5)
    j.watch_namespace("n")
    j.forget_group(5)
    j.forget_namespace("n")
    j.close(timeout=3.0)
    assert started == [([sys.executable, "-c", ENTRY], {"stdin": subprocess.PIPE, "text": True, "start_new_session": True})]
    assert watchdog.lines == ["add pgid 5", "add netns n", "del pgid 5", "del netns n"]
    assert watchdog.waits == [3.0] and not watchdog.killed and j._process is None


def test_a_hung_watchdog_is_killed_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    watchdog = FakeWatchdog(hang=True)
    monkeypatch.setattr(janitor.subprocess, "Popen", lambda command, **kwargs: watchdog)
    j = Janitor()
    j.watch_group(5)
    j.close()
    assert watchdog.killed and watchdog.waits == [30.0, None] and j._process is None


def test_the_real_watchdog_stops_a_group_it_was_told_about(tmp_path: Path) -> None:
    """End to end through ``ENTRY``: a registered group (leader and worker) is gone once the pipe closes."""
    pidfile = tmp_path / "worker"
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "w = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(0.2)'])\n"
         f"open({str(pidfile)!r}, 'w').write(str(w.pid))\nwhile True: time.sleep(0.2)"],
        start_new_session=True,
    )
    try:
        worker = _wait_for_pid(pidfile)
        j = Janitor()
        j.watch_group(leader.pid)
        j.close()
        assert leader.wait(timeout=30) == -signal.SIGTERM
        assert _gone(worker), "the worker shares the leader's group and must be stopped with it"
    finally:
        for pid in (leader.pid, *([int(pidfile.read_text())] if pidfile.exists() and pidfile.read_text() else [])):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leader.wait(timeout=30)


@needs_cluster
def test_the_real_watchdog_empties_and_deletes_a_namespace() -> None:
    from pytest_mooncake.runtime.netns import NetworkNamespace

    netns = NetworkNamespace.create()
    sleeper = subprocess.Popen(netns.wrap(["sleep", "600"]), start_new_session=True)
    try:
        j = Janitor()
        j.watch_namespace(netns.name)
        j.close()
        assert sleeper.wait(timeout=30) == -signal.SIGTERM
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False).stdout
        assert netns.name not in listed.split()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(timeout=30)
        subprocess.run(["ip", "netns", "delete", netns.name], capture_output=True, timeout=10, check=False)


def _wait_for_pid(path: Path, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never got a pid")

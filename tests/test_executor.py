"""The executor's contract, checked against a fake service at the process boundary."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import port_for
import psutil
import pytest

from pytest_mooncake.errors import ServiceStartError
from pytest_mooncake.runtime.executor import ServiceProcess, read_tail
from pytest_mooncake.runtime.janitor import Janitor
from pytest_mooncake.runtime.probes import LogBannerProbe, TCPProbe

FAKE = [sys.executable, str(Path(__file__).parent / "fakes" / "fake_service.py")]


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def worker_pid(log: Path, within: float = 10.0) -> int:
    """The pid a ``--fork`` fake service printed for its worker."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        match = re.search(r"^worker pid (\d+)$", log.read_text() if log.exists() else "", re.MULTILINE)
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no worker pid in {log} after {within} s")


def _service(tmp_path: Path, *args: str, probe=None, timeout: float = 10.0, **kwargs) -> ServiceProcess:  # type: ignore[no-untyped-def]
    log = tmp_path / "fake.log"
    return ServiceProcess("fake", [*FAKE, *args], probe or LogBannerProbe(log, "^READY$"), log, timeout=timeout, **kwargs)


def test_ready_on_banner_then_stopped(tmp_path: Path) -> None:
    service = _service(tmp_path, "--banner=READY", "--delay=0.3").start()
    pid = service.pid
    assert pid is not None and psutil.pid_exists(pid)
    assert os.getpgid(pid) == pid, "each service leads its own process group"
    service.stop()
    assert _gone(pid)


@pytest.mark.parametrize("ignore_sigterm", [False, True])
def test_stop_ends_the_whole_process_group(tmp_path: Path, ignore_sigterm: bool) -> None:
    """A service that forks (vLLM workers, a shell wrapper) must not leave its workers behind."""
    flags = ["--ignore-sigterm"] if ignore_sigterm else []
    service = _service(tmp_path, "--banner=READY", "--fork", *flags, stop_timeout=1.0).start()
    leader, worker = service.pid, worker_pid(tmp_path / "fake.log")
    assert leader is not None and os.getpgid(worker) == leader
    try:
        service.stop()
        assert _gone(leader) and _gone(worker), "every process of the group must be gone after stop()"
    finally:
        _kill_if_alive(worker)


def _kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_ready_on_tcp_probe(tmp_path: Path) -> None:
    port = port_for.select_random()
    service = _service(tmp_path, f"--port={port}", "--delay=0.5", probe=TCPProbe("127.0.0.1", port)).start()
    try:
        assert TCPProbe("127.0.0.1", port).check().ok
    finally:
        service.stop()


def test_early_exit_fails_fast_with_the_log_tail(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceStartError) as info:
        _service(tmp_path, "--exit-code=3", timeout=30).start()
    assert time.monotonic() - started < 5, "an early exit must not wait out the timeout"
    message = str(info.value)
    assert "fake exited with code 3 before it was ready" in message
    assert "fatal: giving up with code 3" in message
    assert str(tmp_path / "fake.log") in message


def test_exit_code_zero_before_ready_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(ServiceStartError, match="exited with code 0 before it was ready"):
        _service(tmp_path, "--exit-code=0").start()


def test_timeout_kills_the_process_and_names_the_probe(tmp_path: Path) -> None:
    banner = f"NOT-THE-BANNER-{uuid.uuid4().hex}"  # only this test's process, not a concurrent run's
    service = _service(tmp_path, f"--banner={banner}", timeout=1.0)
    with pytest.raises(ServiceStartError) as info:
        service.start()
    assert "was not ready after 1 s" in str(info.value)
    assert "log line matching '^READY$'" in str(info.value)
    assert not [p for p in psutil.process_iter(["cmdline"]) if banner in " ".join(p.info["cmdline"] or [])]


def test_sigterm_ignoring_service_is_killed_after_the_grace(tmp_path: Path) -> None:
    service = _service(tmp_path, "--banner=READY", "--ignore-sigterm", stop_timeout=1.0).start()
    pid = service.pid
    assert pid is not None
    started = time.monotonic()
    service.stop()
    assert _gone(pid)
    assert time.monotonic() - started < 5


def test_refuses_to_start_when_the_port_is_taken(tmp_path: Path) -> None:
    port = port_for.select_random()
    holder = _service(tmp_path, f"--port={port}", probe=TCPProbe("127.0.0.1", port)).start()
    try:
        with pytest.raises(ServiceStartError, match="already answers, so another service holds its port"):
            ServiceProcess("second", [*FAKE, f"--port={port}"], TCPProbe("127.0.0.1", port), tmp_path / "2.log", timeout=5).start()
    finally:
        holder.stop()


def test_missing_shared_library_hint(tmp_path: Path) -> None:
    script = tmp_path / "mooncake_master"
    script.write_text("#!/bin/sh\necho 'mooncake_master: error while loading shared libraries: libibverbs.so.1'\nexit 127\n")
    script.chmod(0o755)
    with pytest.raises(ServiceStartError, match="apt-get install -y libibverbs1 libnuma1 libcurl4"):
        ServiceProcess("mooncake_master", [str(script)], LogBannerProbe(tmp_path / "m.log", "started"), tmp_path / "m.log", timeout=5).start()


def test_janitor_stops_registered_groups_when_its_pipe_closes(tmp_path: Path) -> None:
    janitor = Janitor()
    service = _service(tmp_path, "--banner=READY", "--fork", janitor=janitor).start()
    pid, worker = service.pid, worker_pid(tmp_path / "fake.log")
    assert pid is not None
    try:
        janitor.close()
        assert _gone(pid), "the janitor must stop what is still registered when pytest goes away"
        assert _gone(worker), "and every process of the group, grandchildren included"
    finally:
        _kill_if_alive(worker)
        _kill_if_alive(pid)


def test_janitor_survives_a_sigkilled_parent(tmp_path: Path) -> None:
    """pytest killed with SIGKILL runs no finalizer: the janitor alone must clean up."""
    pidfile = tmp_path / "pid"
    parent = tmp_path / "parent.py"
    parent.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            from pathlib import Path
            sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
            from pytest_mooncake.runtime.executor import ServiceProcess, read_tail
            from pytest_mooncake.runtime.janitor import Janitor
            from pytest_mooncake.runtime.probes import LogBannerProbe
            log = Path({str(tmp_path / 'child.log')!r})
            service = ServiceProcess("child", {FAKE!r} + ["--banner=READY"], LogBannerProbe(log, "READY"), log,
                                     timeout=10, janitor=Janitor()).start()
            Path({str(pidfile)!r}).write_text(str(service.pid))
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    subprocess.run([sys.executable, str(parent)], timeout=60, check=False)
    child = int(pidfile.read_text())
    assert _gone(child, within=15)


def test_a_stopped_service_starts_again_on_the_same_log(tmp_path: Path) -> None:
    port = port_for.select_random()
    service = _service(tmp_path, f"--port={port}", probe=TCPProbe("127.0.0.1", port)).start()
    service.stop()
    service.start()
    try:
        assert (tmp_path / "fake.log").read_text().count("fake service starting") == 2
    finally:
        service.stop()


class RecordingJanitor:
    """Records what a service registers with the janitor."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def watch_group(self, pgid: int) -> None:
        self.calls.append(("watch", pgid))

    def forget_group(self, pgid: int) -> None:
        self.calls.append(("forget", pgid))


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_stopped_or_killed_group_is_forgotten_by_the_janitor(tmp_path: Path, how: str) -> None:
    janitor = RecordingJanitor()
    service = _service(tmp_path, "--banner=READY", janitor=janitor).start()  # type: ignore[arg-type]
    pid = service.pid
    getattr(service, how)()
    assert janitor.calls == [("watch", pid), ("forget", pid)]


@pytest.mark.parametrize("keyword", [False, True])
def test_stop_sends_the_signal_it_is_given(tmp_path: Path, keyword: bool) -> None:
    service = _service(tmp_path, "--banner=READY").start()
    if keyword:
        service.stop(stop_signal=signal.SIGINT)
    else:
        service.stop(signal.SIGINT)
    assert "KeyboardInterrupt" in (tmp_path / "fake.log").read_text(), "SIGINT, not the default SIGTERM"


def test_kill_sends_its_signal_and_reaps(tmp_path: Path) -> None:
    service = _service(tmp_path, "--banner=READY").start()
    pid = service.pid
    assert pid is not None
    service.kill(sig=signal.SIGINT)
    assert not psutil.pid_exists(pid), "kill() waits for the process, so nothing is left, not even a zombie"
    assert "KeyboardInterrupt" in (tmp_path / "fake.log").read_text()


def test_kill_with_an_ignored_signal_escalates_after_the_stop_timeout(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    service = _service(tmp_path, "--banner=READY", "--ignore-sigterm", stop_timeout=1.0).start()
    pid = service.pid
    assert pid is not None
    with caplog.at_level("WARNING", logger="pytest_mooncake.runtime.executor"):
        service.kill(sig=signal.SIGTERM)
    assert not psutil.pid_exists(pid), "a process that ignores the signal is killed, not waited for forever"
    assert caplog.messages == [f"fake ignored signal {int(signal.SIGTERM)} for 1 s; killing it; see {tmp_path / 'fake.log'}"]


def test_an_unexpected_exit_code_on_stop_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = tmp_path / "svc"
    script.write_text("#!/bin/sh\ntrap 'exit 3' TERM\necho READY\nwhile :; do sleep 0.1; done\n")
    script.chmod(0o755)
    log = tmp_path / "svc.log"
    service = ServiceProcess("svc", [str(script)], LogBannerProbe(log, "^READY$"), log, timeout=10).start()
    with caplog.at_level("WARNING", logger="pytest_mooncake.runtime.executor"):
        service.stop()
    assert caplog.messages == [f"svc exited with code 3 on stop; see {log}"]


def test_defaults_and_a_log_in_a_new_directory(tmp_path: Path) -> None:
    log = tmp_path / "new" / "dir" / "fake.log"
    service = ServiceProcess("fake", [*FAKE], LogBannerProbe(log, "^READY$"), log, timeout=5)
    assert log.parent.is_dir() and service.stop_timeout == 10.0
    service._log.close()


def test_read_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert read_tail(None) == "" and read_tail(log) == ""
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(50)) + b"bad \xff byte\n")
    assert read_tail(log, lines=3) == "line 48\nline 49\nbad \ufffd byte"
    assert read_tail(log).splitlines() == [f"line {i}" for i in range(11, 50)] + ["bad \ufffd byte"]


def test_missing_library_hint_follows_the_log_tail(tmp_path: Path) -> None:
    script = tmp_path / "mooncake_master"
    script.write_text("#!/bin/sh\necho 'mooncake_master: error while loading shared libraries: libibverbs.so.1'\nexit 127\n")
    script.chmod(0o755)
    with pytest.raises(ServiceStartError) as info:
        ServiceProcess("mooncake_master", [str(script)], LogBannerProbe(tmp_path / "m.log", "started"), tmp_path / "m.log", timeout=5).start()
    assert str(info.value).endswith(
        "Last log lines:\nmooncake_master: error while loading shared libraries: libibverbs.so.1\n"
        "Fix: install the system libraries Mooncake links against: apt-get install -y libibverbs1 libnuma1 libcurl4")


def test_the_service_gets_its_environment(tmp_path: Path) -> None:
    script = tmp_path / "svc"
    script.write_text('#!/bin/sh\necho "FOO=$FOO PATH_SET=${PATH:+yes}"\necho READY\nwhile :; do sleep 0.1; done\n')
    script.chmod(0o755)
    log = tmp_path / "svc.log"
    service = ServiceProcess("svc", [str(script)], LogBannerProbe(log, "^READY$"), log, timeout=10, env={"FOO": "bar"}).start()
    service.stop()
    assert "FOO=bar PATH_SET=yes" in log.read_text()


def test_a_namespace_wraps_the_command(tmp_path: Path) -> None:
    class Namespace:
        def wrap(self, argv: list[str]) -> list[str]:
            return ["ip", "netns", "exec", "pmc-x", *argv]

    log = tmp_path / "x.log"
    service = ServiceProcess("x", ["sleep", "1"], LogBannerProbe(log, "^READY$"), log, timeout=5, netns=Namespace())  # type: ignore[arg-type]
    assert service.command_parts == ["ip", "netns", "exec", "pmc-x", "sleep", "1"]
    service._log.close()

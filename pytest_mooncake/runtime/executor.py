"""The one executor every spawned process goes through.

Built on mirakuru: each service runs in its own session (process group), gets a
per-service log file, is ready when its probe passes within one timeout, fails
fast with the log tail if it exits early, and stops with SIGTERM then SIGKILL
to the whole process group.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import IO, Any

import mirakuru
from mirakuru.exceptions import ProcessExitedWithError, ProcessFinishedWithError, TimeoutExpired

from pytest_mooncake.errors import ServiceStartError
from pytest_mooncake.runtime.janitor import Janitor
from pytest_mooncake.runtime.mirakuru_private import set_output, stop_grace
from pytest_mooncake.runtime.netns import NetworkNamespace
from pytest_mooncake.runtime.probes import Probe

LOG = logging.getLogger(__name__)
_MISSING_LIBS_HINT = (
    "Fix: install the system libraries Mooncake links against: "
    "apt-get install -y libibverbs1 libnuma1 libcurl4"
)


def read_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


class ServiceProcess(mirakuru.Executor):  # type: ignore[misc]
    """A spawned service: command, readiness probe, log file, stop policy."""

    def __init__(
        self,
        name: str,
        command: list[str],
        probe: Probe,
        log_path: Path,
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        stop_timeout: float = 10.0,
        netns: NetworkNamespace | None = None,
        janitor: Janitor | None = None,
    ) -> None:
        self.name = name
        self.probe = probe
        self.log_path = log_path
        self.start_timeout = timeout
        self.stop_timeout = stop_timeout
        self._janitor = janitor
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        super().__init__(
            netns.wrap(command) if netns else command,
            timeout=timeout,
            sleep=0.1,
            envvars=env or {},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def pre_start_check(self) -> bool:
        # Something already answering on our port would make every probe lie.
        return bool(self.probe.check().ok)

    def after_start_check(self) -> bool:
        return bool(self.probe.check().ok)

    def check_subprocess(self) -> bool:
        # mirakuru allows exit code 0 for daemonising commands; none of ours
        # daemonise, so any exit before readiness is a failure.
        if self.process is not None and self.process.poll() == 0:
            raise ProcessExitedWithError(self, 0)
        return bool(super().check_subprocess())

    def start(self) -> ServiceProcess:
        if self._log.closed:  # a restart after stop(): keep appending to the same log
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            set_output(self, self._log)
        try:
            super().start()
        except ProcessExitedWithError as exc:
            self._fail(f"exited with code {exc.exit_code} before it was ready")
        except TimeoutExpired:
            self._fail(
                f"was not ready after {self.start_timeout:.0f} s "
                f"(waiting for {self.probe.description}: {self.probe.check().detail})"
            )
        except mirakuru.AlreadyRunning:
            self._fail(
                f"cannot start: {self.probe.description} already answers, "
                "so another service holds its port"
            )
        if self._janitor is not None and self.pid is not None:
            self._janitor.watch_group(self.pid)
        return self

    def _fail(self, reason: str) -> None:
        self.kill()
        self._log.close()
        tail = read_tail(self.log_path)
        if "error while loading shared libraries" in tail:
            tail += "\n" + _MISSING_LIBS_HINT
        raise ServiceStartError(self.name, reason, self.log_path, tail) from None

    def stop(self, *args: Any, **kwargs: Any) -> ServiceProcess:
        pid = self.pid
        try:
            with stop_grace(self, self.stop_timeout):
                super().stop(*args, **kwargs)
        except ProcessFinishedWithError as exc:
            LOG.warning("%s exited with code %s on stop; see %s", self.name, exc.exit_code, self.log_path)
        finally:
            self._log.close()
            if self._janitor is not None and pid is not None:
                self._janitor.forget_group(pid)
        return self

    def kill(self, wait: bool = True, sig: int | None = None) -> ServiceProcess:
        pid = self.pid
        if sig not in (None, signal.SIGKILL) and self.process is not None and self.running():
            # mirakuru waits for the signalled group without a limit (with wait=False too: its
            # Popen.__exit__ waits), so one that ignores ``sig`` would hang us; SIGINT is ignored
            # by whatever a shell started in the background.
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("%s ignored signal %d for %.0f s; killing it; see %s",
                            self.name, sig, self.stop_timeout, self.log_path)
        super().kill(wait=wait)  # mirakuru's kill signal, SIGKILL, for whatever is left of the group
        if self._janitor is not None and pid is not None:
            self._janitor.forget_group(pid)
        return self

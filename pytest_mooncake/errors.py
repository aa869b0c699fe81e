"""Exceptions that say what failed, where we looked and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# The exit status of every bad input, in pytest runs and in our commands alike (pytest's
# ExitCode.USAGE_ERROR).
USAGE_ERROR = 4


class MooncakeError(Exception):
    """Base class of every error pytest-mooncake raises on purpose."""


def _bullets(lines: Iterable[str]) -> str:
    return "\n".join(f"  - {line}" for line in lines)


def install_extra(extra: str) -> str:
    """How to add one of our extras: the package is on no index, so from a checkout or a built wheel."""
    return (f"install the [{extra}] extra: pip install -e '.[{extra}]' in a pytest-mooncake checkout, or "
            f"pip install \"$(ls dist/pytest_mooncake-*.whl)[{extra}]\" from a built wheel (README: Install)")


# How to get the Mooncake binaries (mooncake_master, transfer_engine_bench).
INSTALL_MOONCAKE = (install_extra("mooncake") + "; GPU hosts install mooncake-transfer-engine or "
                    "mooncake-transfer-engine-cuda13 instead")


class BinaryNotFound(MooncakeError):
    """An executable we spawn (mooncake_master, transfer_engine_bench, etcd) is missing."""

    def __init__(self, name: str, checked: Iterable[str], option: str, fix: str | None = None) -> None:
        self.name, self.checked = name, list(checked)
        fixes = [fix] if fix else [f"install the Mooncake wheel: {INSTALL_MOONCAKE},",
                                   f"point the plugin at the binary with {option},"]
        super().__init__(
            f"Could not find {name}.\nChecked:\n{_bullets(self.checked)}\n"
            "To fix this, either:\n" + "".join(f"  - {line}\n" for line in fixes) +
            "  - or attach to a running cluster with --mooncake-master=HOST:PORT."
        )


class ServiceStartError(MooncakeError):
    """A spawned service exited early or never became ready."""

    def __init__(self, service: str, reason: str, log_path: Path | None, log_tail: str) -> None:
        where = f"Log: {log_path}\n" if log_path else ""
        tail = f"Last log lines:\n{log_tail}" if log_tail else "The log is empty."
        super().__init__(f"{service} {reason}.\n{where}{tail}")


class EndpointUnreachable(MooncakeError):
    """An attached service did not answer its readiness probe."""

    def __init__(self, what: str, probe: str, detail: str, fix: str) -> None:
        super().__init__(f"{what} is not reachable: {probe} failed ({detail}).\nFix: {fix}")


class NamespaceUnavailable(MooncakeError):
    """A private network namespace could not be created."""


class StoreAgentError(MooncakeError):
    """A store-node agent process failed to answer a request."""

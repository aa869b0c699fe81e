"""The one use of mirakuru's private attributes: a mirakuru release that renames them breaks this
module's test (tests/test_adapters.py), not the executor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import mirakuru


def set_output(executor: mirakuru.SimpleExecutor, handle: IO[bytes]) -> None:
    """Where the next ``start()`` sends the process's stdout: mirakuru takes it only in ``__init__``."""
    executor._stdout = handle


@contextmanager
def stop_grace(executor: mirakuru.SimpleExecutor, seconds: float) -> Iterator[None]:
    """``stop()`` waits ``seconds`` for the group before killing it: mirakuru reuses the start
    timeout for that wait and has no argument for it."""
    start_timeout = executor._timeout
    executor._timeout = seconds
    try:
        yield
    finally:
        executor._timeout = start_timeout

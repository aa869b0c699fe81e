"""pytest's side of a store-node agent: the store API, one process away.

Method names, arguments and return values are those of
``mooncake.store.MooncakeDistributedStore`` (0 or a negative error code, ``b''``
on a failed ``get``), so a suite reads like plain Mooncake code. A
``ReplicateConfig`` is passed as a dict, e.g. ``{"replica_num": 2}``.
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from pytest_mooncake.errors import StoreAgentError

ReplicateSpec = dict[str, Any]


class StoreClient:
    def __init__(self, name: str, socket_path: Path, authkey: bytes, *, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._conn: Connection = Client(str(socket_path), family="AF_UNIX", authkey=authkey)
        self._lock = threading.Lock()

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``op`` in the agent and return its result; raise StoreAgentError on failure."""
        with self._lock:
            try:
                self._conn.send((op, args, kwargs))
                if not self._conn.poll(self.timeout):
                    raise StoreAgentError(
                        f"{self.name}: {op} did not answer within {self.timeout:.0f} s "
                        "(raise --mooncake-request-timeout, or look at the node's log)"
                    )
                status, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise StoreAgentError(
                    f"{self.name}: the agent process is gone ({type(exc).__name__}) while running {op}; "
                    "see its log for the cause"
                ) from None
        if status != "ok":
            raise StoreAgentError(f"{self.name}: {op} failed: {value}")
        return value

    def close(self) -> None:
        self._conn.close()

    # The store API the suites use, typed. Anything else: ``call(name, ...)``.
    def put(self, key: str, value: bytes, config: ReplicateSpec | None = None) -> int:
        return int(self.call("put", key, value, **_config(config)))

    def upsert(self, key: str, value: bytes, config: ReplicateSpec | None = None) -> int:
        return int(self.call("upsert", key, value, **_config(config)))

    def put_batch(self, keys: list[str], values: list[bytes], config: ReplicateSpec | None = None) -> int:
        return int(self.call("put_batch", keys, values, **_config(config)))

    def upsert_batch(self, keys: list[str], values: list[bytes], config: ReplicateSpec | None = None) -> int:
        return int(self.call("upsert_batch", keys, values, **_config(config)))

    def get(self, key: str) -> bytes:
        return bytes(self.call("get", key))

    def get_batch(self, keys: list[str]) -> list[bytes]:
        return [bytes(value) for value in self.call("get_batch", keys)]

    def get_size(self, key: str) -> int:
        return int(self.call("get_size", key))

    def is_exist(self, key: str) -> int:
        return int(self.call("is_exist", key))

    def batch_is_exist(self, keys: list[str]) -> list[int]:
        return [int(code) for code in self.call("batch_is_exist", keys)]

    def remove(self, key: str, force: bool = False) -> int:
        return int(self.call("remove", key, force))

    def batch_remove(self, keys: list[str], force: bool = False) -> list[int]:
        return [int(code) for code in self.call("batch_remove", keys, force)]

    def remove_all(self, force: bool = False) -> int:
        return int(self.call("remove_all", force))

    def replica_endpoints(self, key: str) -> list[str]:
        return list(self.call("replica_endpoints", key))

    def get_hostname(self) -> str:
        return str(self.call("get_hostname"))

    def health_check(self) -> int:
        return int(self.call("health_check"))


def _config(config: ReplicateSpec | None) -> dict[str, Any]:
    return {} if config is None else {"config": dict(config)}

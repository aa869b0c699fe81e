"""The store agent's ``overwrite`` op: same-size corruption of stored values (the positive control
of the output-integrity check, suites/serving/test_corruption.py)."""

from __future__ import annotations

import pytest

from pytest_mooncake.cluster.agent_ops import OPS


class Store:
    """The installed store's semantics the op relies on: ``put`` over an existing key keeps the old
    bytes (and answers 0), ``upsert`` replaces them; a missing key's size is negative."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = dict(data)

    def get_size(self, key: str) -> int:
        return len(self.data[key]) if key in self.data else -704

    def put(self, key: str, value: bytes) -> int:
        self.data.setdefault(key, value)
        return 0

    def upsert(self, key: str, value: bytes) -> int:
        self.data[key] = bytes(value)
        return 0

    def get(self, key: str) -> bytes:
        return self.data.get(key, b"")


def test_zeros_replace_every_byte_and_keep_the_size() -> None:
    store = Store({"a": b"\x01" * 300, "b": b"\x02" * 7})
    done = OPS["overwrite"](store, ["a", "b"])
    assert store.data == {"a": bytes(300), "b": bytes(7)}
    assert done == [{"size": 300, "code": 0, "size_after": 300, "exact": 1},
                    {"size": 7, "code": 0, "size_after": 7, "exact": 1}]


def test_random_bytes_are_seeded_and_a_missing_key_is_reported_not_written() -> None:
    first, second = Store({"a": bytes(64)}), Store({"a": bytes(64)})
    OPS["overwrite"](first, ["a"], "random", 7)
    OPS["overwrite"](second, ["a"], "random", 7)
    assert first.data["a"] == second.data["a"] != bytes(64) and len(first.data["a"]) == 64
    assert OPS["overwrite"](first, ["gone"]) == [{"size": -704, "code": -704, "size_after": -704, "exact": 0}]
    assert "gone" not in first.data


def test_an_unknown_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="zeros"):
        OPS["overwrite"](Store({}), ["a"], "ones")

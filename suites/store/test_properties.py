"""Random operation sequences against the real store, checked against a model (hypothesis)."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed: install pytest-mooncake with its [suites] extra")

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from pytest_mooncake import StoreClient
from pytest_mooncake.cluster.integrity import BAD, Checker

KEYS = st.sampled_from([f"k{i}" for i in range(6)])
SIZES = st.sampled_from([1, 100, 4096, 65536])
OBJECT_NOT_FOUND = -704


def test_store_behaves_like_its_model(mooncake_store: StoreClient, mooncake_run_id: str) -> None:
    class StoreModel(RuleBasedStateMachine):
        """Eviction may only ever show up as a clean miss."""

        def __init__(self) -> None:
            super().__init__()
            self.checker = Checker(eviction_possible=True)
            self.prefix = f"{mooncake_run_id}-prop-{id(self)}"

        def key(self, name: str) -> str:
            return f"{self.prefix}-{name}"

        @rule(name=KEYS, size=SIZES)
        def put(self, name: str, size: int) -> None:
            key = self.key(name)
            if key in self.checker.written:  # put never overwrites: the model keeps the old value
                assert mooncake_store.put(key, b"ignored") == 0
                return
            assert mooncake_store.put(key, self.checker.wrote(key, size)) == 0

        @rule(name=KEYS, size=SIZES)
        def upsert(self, name: str, size: int) -> None:
            assert mooncake_store.upsert(self.key(name), self.checker.wrote(self.key(name), size)) == 0

        @rule(name=KEYS)
        def get(self, name: str) -> None:
            outcome = self.checker.check(self.key(name), mooncake_store.get(self.key(name)))
            assert outcome not in BAD, f"{outcome} read of {name}"

        @rule(name=KEYS)
        def exist(self, name: str) -> None:
            exists = mooncake_store.is_exist(self.key(name))
            assert exists in (0, 1)
            if exists:
                assert self.key(name) in self.checker.written, f"{name} exists but was never written or was removed"

        @rule(name=KEYS)
        def size(self, name: str) -> None:
            size = mooncake_store.get_size(self.key(name))
            if size != OBJECT_NOT_FOUND:
                assert self.key(name) in self.checker.written, f"{name} has a size ({size}) but no value in the model"
                assert size == self.checker.written[self.key(name)][0], f"{name}: size {size}, model {self.checker.written[self.key(name)]}"

        @rule(name=KEYS)
        def remove(self, name: str) -> None:
            code = mooncake_store.remove(self.key(name), True)
            assert code in (0, -704), code
            self.checker.removed(self.key(name))

        def teardown(self) -> None:
            mooncake_store.call("remove_by_regex", f"^{self.prefix}-", True)

    run = settings(max_examples=25, stateful_step_count=20, deadline=None,
                   suppress_health_check=list(HealthCheck))(StoreModel)
    run.TestCase().runTest()

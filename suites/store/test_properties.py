"""Random operation sequences against the real store, checked against a model (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from pytest_mooncake import StoreClient
from pytest_mooncake.integrity import BAD, Checker

KEYS = st.sampled_from([f"k{i}" for i in range(6)])
SIZES = st.sampled_from([1, 100, 4096, 65536])


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
        def remove(self, name: str) -> None:
            code = mooncake_store.remove(self.key(name), True)
            assert code in (0, -704), code
            self.checker.removed(self.key(name))

        def teardown(self) -> None:
            mooncake_store.call("remove_by_regex", f"^{self.prefix}-", True)

    run = settings(max_examples=25, stateful_step_count=20, deadline=None,
                   suppress_health_check=list(HealthCheck))(StoreModel)
    run.TestCase().runTest()


@pytest.mark.parametrize("writers", [3])
def test_concurrent_writers_and_readers(request, mooncake_master, mooncake_store_nodes, mooncake_run_id: str, writers: int, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    """Several client processes write disjoint and shared keys while others read: no wrong bytes, no hang."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    from pytest_mooncake.cluster import store_node
    from pytest_mooncake.session import get_config, state

    config, session = get_config(request.config), state(request.config)
    workdir = tmp_path_factory.mktemp("concurrency")
    with ExitStack() as stack:
        clients = [
            stack.enter_context(store_node(mooncake_master, config, f"client-{i}", segment_size=0, workdir=workdir,
                                           socket_dir=session.socket_dir, authkey=session.authkey, janitor=session.janitor)).client
            for i in range(writers)
        ]
        prefix = f"{mooncake_run_id}-conc"

        def work(index: int) -> dict[str, int]:
            client = clients[index]
            client.call("fill", f"{prefix}-own{index}", 30, 65536)
            client.call("fill", f"{prefix}-shared", 30, 65536)
            own = client.call("verify", f"{prefix}-own{index}", 30, 65536)
            shared = client.call("verify", f"{prefix}-shared", 30, 65536)
            return {k: own.get(k, 0) + shared.get(k, 0) for k in {*own, *shared}}

        with ThreadPoolExecutor(writers) as pool:
            outcomes = list(pool.map(work, range(writers), timeout=120))
        clients[0].call("remove_by_regex", f"^{prefix}-", True)
    for outcome in outcomes:
        assert not {k: v for k, v in outcome.items() if k in BAD}, outcomes
        assert outcome.get("exact", 0) == 60, f"no eviction is possible at this size, so every read must be exact: {outcome}"

"""Fixture factories: start/attach pairs that return one handle type.

A user's conftest declares extra clusters the way pytest-postgresql does::

    from pytest_mooncake import factories

    small_master = factories.mooncake_master_proc(lease_ttl="500ms")
    small_nodes = factories.mooncake_store_nodes("small_master", count=3, segment_size="16MiB")
    small_store = factories.mooncake_store("small_master", "small_nodes")

Keyword arguments are settings (see README) and win over every other source.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from . import reporting
from .cluster import MasterHandle, StoreNode, attached_master, spawned_master, store_node
from .metrics import MasterMetrics
from .session import get_config, state
from .store_client import StoreClient
from .vllm.server import Endpoint, attach_endpoint, spawned_vllm, vllm_available

FixtureFunction = Callable[..., Any]


def _master_fixture(mode: str, overrides: dict[str, Any]) -> FixtureFunction:
    @pytest.fixture(scope="session")
    def master_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[MasterHandle]:
        config = get_config(request.config).with_overrides(**overrides)
        attach = config.attach if mode == "auto" else mode == "attach"
        if attach:
            if config.master is None:
                raise pytest.UsageError(
                    f"{request.fixturename} attaches to an existing master, but none is configured. "
                    "Fix: pass --mooncake-master=HOST:PORT (or use mooncake_master_proc to spawn one)."
                )
            with attached_master(config) as master:
                topology = state(request.config).results.topology
                topology[request.fixturename] = {
                    "spawned": False,
                    "master": str(master.endpoint),
                    "metadata_url": master.metadata_url,
                    "metrics_url": master.metrics_url,
                }
                metrics = MasterMetrics(master)
                yield master
                topology[request.fixturename]["left_behind"] = _left_behind(request, master, metrics)
            return
        workdir = tmp_path_factory.mktemp(request.fixturename)
        with spawned_master(config, workdir, state(request.config).janitor) as master:
            reporting.register_log(request.config, request.fixturename, master.log_path)
            state(request.config).results.topology[request.fixturename] = {
                "spawned": True,
                "netns": master.netns.name if master.netns else None,
                "master": str(master.endpoint),
            }
            yield master

    return master_fixture


def _left_behind(request: pytest.FixtureRequest, master: MasterHandle, metrics: MasterMetrics) -> dict[str, float]:
    """The attached master's change over the session, printed at the end of the run."""
    try:
        delta = metrics.delta()
    except OSError as exc:
        state(request.config).left_behind.append(f"{master.endpoint}: could not read its metrics at the end: {exc}")
        return {}
    change = {name: delta.get(name, 0.0) for name in ("master_key_count", "master_allocated_bytes", "master_evicted_key_count")}
    state(request.config).left_behind.append(
        f"{master.endpoint}: {change['master_key_count']:+.0f} keys, {change['master_allocated_bytes'] / 2**20:+.1f} MiB "
        f"allocated, {change['master_evicted_key_count']:.0f} keys evicted during this run (master deltas; other "
        "clients' activity counts too). KV that a serving endpoint's connector stored for our prompts stays and "
        "ages out by the store's own eviction; the keys our store clients wrote were removed."
    )
    return change


def mooncake_master_proc(**overrides: Any) -> FixtureFunction:
    """A session fixture that always spawns a master in a private network namespace."""
    return _master_fixture("spawn", overrides)


def mooncake_master_noproc(**overrides: Any) -> FixtureFunction:
    """A session fixture that attaches to the configured master (``--mooncake-master``)."""
    return _master_fixture("attach", overrides)


def mooncake_master(**overrides: Any) -> FixtureFunction:
    """Attach when a master is configured, spawn otherwise."""
    return _master_fixture("auto", overrides)


def mooncake_store_nodes(
    master_fixture: str = "mooncake_master", *, count: int | None = None, **overrides: Any
) -> FixtureFunction:
    """Store-node processes that each mount ``segment_size`` bytes into the master's pool."""

    @pytest.fixture(scope="session")
    def nodes_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[list[StoreNode]]:
        master: MasterHandle = request.getfixturevalue(master_fixture)
        config = get_config(request.config).with_overrides(store_nodes=count, **overrides)
        session = state(request.config)
        workdir = tmp_path_factory.mktemp(request.fixturename)
        with ExitStack() as stack:
            nodes = [
                stack.enter_context(
                    store_node(
                        master,
                        config,
                        f"{request.fixturename}-{index}",
                        segment_size=config.segment_size,
                        workdir=workdir,
                        socket_dir=session.socket_dir,
                        authkey=session.authkey,
                        janitor=session.janitor,
                    )
                )
                for index in range(config.store_nodes)
            ]
            for node in nodes:
                reporting.register_log(request.config, node.name, node.log_path)
            session.results.topology[request.fixturename] = {
                "count": len(nodes),
                "segment_size": config.segment_size,
                "local_buffer_size": config.local_buffer_size,
            }
            yield nodes

    return nodes_fixture


def mooncake_store(
    master_fixture: str = "mooncake_master",
    nodes_fixture: str = "mooncake_store_nodes",
    **overrides: Any,
) -> FixtureFunction:
    """A connected store client in its own process, mounting no memory of its own.

    It owns no segment, so killing a store node never takes the suites' client down.
    """

    @pytest.fixture(scope="session")
    def store_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[StoreClient]:
        master: MasterHandle = request.getfixturevalue(master_fixture)
        request.getfixturevalue(nodes_fixture)
        config = get_config(request.config).with_overrides(**overrides)
        session = state(request.config)
        with store_node(
            master,
            config,
            request.fixturename,
            segment_size=0,
            workdir=tmp_path_factory.mktemp(request.fixturename),
            socket_dir=session.socket_dir,
            authkey=session.authkey,
            janitor=session.janitor,
        ) as client_node:
            yield client_node.client
            if not master.spawned:
                _remove_own_keys(request, master, client_node.client)

    return store_fixture


def _remove_own_keys(request: pytest.FixtureRequest, master: MasterHandle, client: StoreClient) -> None:
    """Sweep what a test left under this run's prefix (a test cut short by a failure, say)."""
    run_id = state(request.config).run_id
    removed = client.call("remove_by_regex", f"^{re.escape(run_id)}-", True)
    state(request.config).left_behind.append(
        f"{master.endpoint}: removed {max(removed, 0)} leftover keys of this run (prefix {run_id}-)"
        + (f"; remove_by_regex answered {removed}" if removed < 0 else "")
    )


def mooncake_metrics(master_fixture: str = "mooncake_master") -> FixtureFunction:
    """Per test: the master's metrics, with ``delta()`` since the test began."""

    @pytest.fixture
    def metrics_fixture(request: pytest.FixtureRequest) -> MasterMetrics:
        return MasterMetrics(request.getfixturevalue(master_fixture))

    return metrics_fixture


def openai_endpoint(
    *, prefix_caching: bool = True, baseline: bool = False, scope: str = "session", **overrides: Any
) -> FixtureFunction:
    """The endpoint under test (``baseline=False``) or the no-reuse baseline of A/B runs.

    Attaches to ``--mooncake-openai-base-url`` / ``--mooncake-baseline-url`` when given;
    otherwise spawns vLLM (prefix caching on for the endpoint, off for the baseline) when
    it is installed, and skips with the reason when it is not.
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def endpoint_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Endpoint]:
        config = get_config(request.config).with_overrides(**overrides)
        url = config.baseline_url if baseline else config.openai_base_url
        label = "baseline" if baseline else "endpoint"
        if url is not None:
            yield attach_endpoint(url, config, label)
            return
        if baseline and config.openai_base_url is not None:
            pytest.skip("A/B against an attached endpoint needs its baseline: pass --mooncake-baseline-url")
        reason = vllm_available(config.vllm_python)
        if reason:
            pytest.skip(f"no OpenAI endpoint: {reason}")
        caching = prefix_caching and not baseline
        name = "vllm-prefix-cache" if caching else "vllm-no-prefix-cache"
        with spawned_vllm(
            config, tmp_path_factory.mktemp(name), state(request.config).janitor, prefix_caching=caching, label=name
        ) as endpoint:
            reporting.register_log(request.config, name, endpoint.log_path)
            state(request.config).results.topology[request.fixturename] = {
                "spawned": True, "server": "vllm", "prefix_caching": caching, "url": endpoint.base_url,
            }
            yield endpoint

    return endpoint_fixture

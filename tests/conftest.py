"""Our own tests of the plugin: pytester for the pytest surface, real processes for the rest."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = ["pytester"]

# The same examples on every run: a property-test failure must reproduce.
settings.register_profile("reproducible", derandomize=True)
settings.load_profile("reproducible")

REPO = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Our own runs never turn into a doctor session unasked. ``--mooncake-doctor`` replaces the
    test session and exits 0 when its checks pass, so a wrong default of the switch would end every
    run of this suite green without running a test, the one that checks that default included."""
    asked = [*config.invocation_params.args, *config.getini("addopts"), *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    if config.getoption("mooncake_doctor", False) and "--mooncake-doctor" not in asked:
        raise pytest.UsageError("--mooncake-doctor is on though this run did not ask for it: its default must be False")


def _can_make_namespaces() -> bool:
    import subprocess

    return shutil.which("ip") is not None and subprocess.run(
        ["ip", "netns", "list"], capture_output=True, check=False
    ).returncode == 0


needs_cluster = pytest.mark.skipif(
    shutil.which("ip") is None or not _can_make_namespaces(),
    reason="needs root and iproute2 to spawn a real Mooncake cluster in a network namespace",
)


@pytest.fixture
def print_config_test(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project with one test that prints the effective settings."""
    pytester.makepyfile(
        test_print="""
        def test_print(mooncake_config):
            for name in ("master", "metadata_url", "metrics_url", "protocol", "rdma_devices",
                         "store_nodes", "segment_size", "local_buffer_size", "openai_base_url",
                         "api_key", "model", "max_tokens", "temperature", "rounds",
                         "requests_per_scenario", "concurrency", "scenarios", "lease_ttl"):
                print(f"CFG {name}={getattr(mooncake_config, name)!r}")
            print(f"CFG machines={dict(mooncake_config.machines)!r}")
            print(f"CFG sources.store_nodes={mooncake_config.sources['store_nodes']}")
        """
    )
    return pytester

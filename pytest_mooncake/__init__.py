"""pytest-mooncake: fixtures, markers and suites that qualify Mooncake KV-cache deployments.

What a suite author needs is exported here, and suites import nothing else of the package
(tests/test_layers.py). Names load on first use: pytest imports this package in every run of
its environment, and the serving parts need the ``serving`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it; the names in _MODULES are those modules themselves.
_MODULES = frozenset({"factories", "markers"})
_EXPORTS = {
    "LinkFaultUnsupported": "pytest_mooncake.cluster.faults",
    "BAD": "pytest_mooncake.cluster.integrity",
    "Checker": "pytest_mooncake.cluster.integrity",
    "value_for": "pytest_mooncake.cluster.integrity",
    "MasterMetrics": "pytest_mooncake.cluster.metrics",
    "SAFE_FILL_RATIO": "pytest_mooncake.cluster.metrics",
    "Snapshot": "pytest_mooncake.cluster.metrics",
    "MasterHandle": "pytest_mooncake.cluster.nodes",
    "spawned_master": "pytest_mooncake.cluster.nodes",
    "store_node": "pytest_mooncake.cluster.nodes",
    "StoreNode": "pytest_mooncake.cluster.nodes",
    "StoreClient": "pytest_mooncake.cluster.store_client",
    "BenchResult": "pytest_mooncake.cluster.transfer_bench",
    "line_rate_gbps": "pytest_mooncake.cluster.transfer_bench",
    "run_initiator": "pytest_mooncake.cluster.transfer_bench",
    "start_target": "pytest_mooncake.cluster.transfer_bench",
    "markers": "pytest_mooncake.config.markers",
    "rdma_devices": "pytest_mooncake.config.markers",
    "SCENARIOS": "pytest_mooncake.config.markers",
    "MooncakeConfig": "pytest_mooncake.config.options",
    "effective_thresholds": "pytest_mooncake.config.profiles",
    "Endpoint": "pytest_mooncake.endpoints.server",
    "Tokenize": "pytest_mooncake.endpoints.tokens",
    "tokenizer_for": "pytest_mooncake.endpoints.tokens",
    "TokenPool": "pytest_mooncake.endpoints.tokens",
    "Deployment": "pytest_mooncake.endpoints.topology",
    "KV_BLOCK_TOKENS": "pytest_mooncake.endpoints.topology",
    "spawned_deployment": "pytest_mooncake.endpoints.topology",
    "TOPOLOGIES": "pytest_mooncake.endpoints.topology",
    "factories": "pytest_mooncake.harness.factories",
    "get_config": "pytest_mooncake.harness.session",
    "state": "pytest_mooncake.harness.session",
    "break_even_bandwidth": "pytest_mooncake.qualify.capacity",
    "MODELS": "pytest_mooncake.qualify.capacity",
    "calibrate": "pytest_mooncake.qualify.capacity_search",
    "capacity_gain": "pytest_mooncake.qualify.capacity_search",
    "CapacityResult": "pytest_mooncake.qualify.capacity_search",
    "CapacitySLO": "pytest_mooncake.qualify.capacity_search",
    "ScenarioWorkload": "pytest_mooncake.qualify.capacity_search",
    "search": "pytest_mooncake.qualify.capacity_search",
    "SearchPlan": "pytest_mooncake.qualify.capacity_search",
    "Step": "pytest_mooncake.qualify.capacity_search",
    "Progress": "pytest_mooncake.qualify.progress",
    "Counters": "pytest_mooncake.qualify.protocol",
    "Protocol": "pytest_mooncake.qualify.protocol",
    "replay": "pytest_mooncake.qualify.replay",
    "replayable": "pytest_mooncake.qualify.replay",
    "evaluate": "pytest_mooncake.qualify.reuse",
    "Explain": "pytest_mooncake.qualify.reuse",
    "apply_definition": "pytest_mooncake.qualify.scenarios",
    "default_scenarios": "pytest_mooncake.qualify.scenarios",
    "salt_tokens": "pytest_mooncake.qualify.scenarios",
    "Scenario": "pytest_mooncake.qualify.scenarios",
    "user_scenario": "pytest_mooncake.qualify.scenarios",
    "bundled_trace": "pytest_mooncake.qualify.traces",
    "load_trace": "pytest_mooncake.qualify.traces",
    "attach_statistics": "pytest_mooncake.results.attach",
    "label": "pytest_mooncake.results.attach",
    "show": "pytest_mooncake.results.attach",
    "Outcome": "pytest_mooncake.results.schema",
    "Round": "pytest_mooncake.results.schema",
    "Rule": "pytest_mooncake.results.schema",
    "Results": "pytest_mooncake.results.store",
    "find_binary": "pytest_mooncake.runtime.binaries",
    "http_request": "pytest_mooncake.runtime.probes",
    "wait_for": "pytest_mooncake.runtime.probes",
    "Concurrency": "pytest_mooncake.serving",
    "judge": "pytest_mooncake.serving",
    "RequestRecord": "pytest_mooncake.serving",
    "RequestSpec": "pytest_mooncake.serving",
    "run_requests": "pytest_mooncake.serving",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def _version() -> str:
    # On first use: reading the installed metadata costs a few ms of every pytest run's start-up.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-mooncake")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = _version()
        return globals()[name]
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'pytest_mooncake' has no attribute {name!r}")
    module = importlib.import_module(where)
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

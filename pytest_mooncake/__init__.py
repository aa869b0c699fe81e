"""pytest-mooncake: fixtures, markers and suites that qualify Mooncake KV-cache deployments.

What every suite needs is exported here; the helpers of one domain come from the documented
modules in ``DOMAIN_MODULES``. Suites import nothing else of the package (tests/test_layers.py). Names load on first use: pytest imports this package in every run of
its environment, and the serving parts need the ``serving`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it; "factories" is that module itself. Helpers of one domain
# (capacity search, traces, transfer bench, ...) are imported from their documented modules,
# listed in DOMAIN_MODULES; each declares its public names in __all__.
_MODULES = frozenset({"factories"})
_EXPORTS = {
    "MasterHandle": "pytest_mooncake.cluster.nodes",
    "StoreNode": "pytest_mooncake.cluster.nodes",
    "StoreClient": "pytest_mooncake.cluster.store_client",
    "MasterMetrics": "pytest_mooncake.cluster.metrics",
    "MooncakeConfig": "pytest_mooncake.config.options",
    "effective_thresholds": "pytest_mooncake.config.profiles",
    "Endpoint": "pytest_mooncake.endpoints.server",
    "TokenPool": "pytest_mooncake.endpoints.tokens",
    "Deployment": "pytest_mooncake.endpoints.topology",
    "factories": "pytest_mooncake.harness.factories",
    "Record": "pytest_mooncake.harness.spawner",
    "Spawner": "pytest_mooncake.harness.spawner",
    "TransferBench": "pytest_mooncake.harness.spawner",
    "Scenario": "pytest_mooncake.qualify.scenarios",
    "attach_statistics": "pytest_mooncake.results.allure_steps",
    "label": "pytest_mooncake.results.allure_steps",
    "show": "pytest_mooncake.results.allure_steps",
    "Kind": "pytest_mooncake.results.schema",
    "Outcome": "pytest_mooncake.results.schema",
    "Round": "pytest_mooncake.results.schema",
    "Rule": "pytest_mooncake.results.schema",
    "wait_for": "pytest_mooncake.runtime.probes",
    "Concurrency": "pytest_mooncake.serving",
    "judge": "pytest_mooncake.serving",
    "RequestRecord": "pytest_mooncake.serving",
    "RequestSpec": "pytest_mooncake.serving",
    "run_requests": "pytest_mooncake.serving",
}

DOMAIN_MODULES = (
    "pytest_mooncake.cluster.faults",
    "pytest_mooncake.cluster.integrity",
    "pytest_mooncake.cluster.metrics",
    "pytest_mooncake.cluster.transfer_bench",
    "pytest_mooncake.config.markers",
    "pytest_mooncake.endpoints.tokens",
    "pytest_mooncake.endpoints.topology",
    "pytest_mooncake.qualify.capacity",
    "pytest_mooncake.qualify.capacity_search",
    "pytest_mooncake.qualify.kv_budget",
    "pytest_mooncake.qualify.progress",
    "pytest_mooncake.qualify.protocol",
    "pytest_mooncake.qualify.replay",
    "pytest_mooncake.qualify.reuse",
    "pytest_mooncake.qualify.scenarios",
    "pytest_mooncake.qualify.tiers",
    "pytest_mooncake.qualify.traces",
    "pytest_mooncake.serving.gauges",
    "pytest_mooncake.tools.tiers",
)

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

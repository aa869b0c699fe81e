"""pytest-mooncake: fixtures, markers and suites that qualify Mooncake KV-cache deployments."""

from importlib.metadata import PackageNotFoundError, version

from pytest_mooncake.cluster.metrics import MasterMetrics, Snapshot
from pytest_mooncake.cluster.nodes import MasterHandle, StoreNode
from pytest_mooncake.cluster.store_client import StoreClient
from pytest_mooncake.config.options import MooncakeConfig

try:
    __version__ = version("pytest-mooncake")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "MasterHandle",
    "MasterMetrics",
    "MooncakeConfig",
    "Snapshot",
    "StoreClient",
    "StoreNode",
    "__version__",
]

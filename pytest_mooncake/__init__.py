"""pytest-mooncake: fixtures, markers and suites that qualify Mooncake KV-cache deployments."""

from importlib.metadata import PackageNotFoundError, version

from .cluster import MasterHandle, StoreNode
from .metrics import MasterMetrics, Snapshot
from .options import MooncakeConfig
from .store_client import StoreClient

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

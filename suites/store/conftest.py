"""Clusters of the store suites, apart from the session's default one.

- ``evict_*``: the cluster the eviction tests overfill. Spawned small (2 nodes x 16 MiB)
  so filling it costs seconds; with --mooncake-master it is the attached cluster (those
  tests then run only with --mooncake-allow-eviction), and they size their fill from its
  measured capacity.
- ``small_*``: always a private spawned cluster, for what no shared cluster may see
  (remove_all, a store wedged by hard pins).
"""

from pytest_mooncake import factories

evict_master = factories.mooncake_master()
evict_nodes = factories.mooncake_store_nodes("evict_master", segment_size="16MiB")
evict_store = factories.mooncake_store("evict_master", "evict_nodes")

small_master = factories.mooncake_master_proc(lease_ttl="500ms")
small_nodes = factories.mooncake_store_nodes("small_master", count=2, segment_size="16MiB", local_buffer_size="8MiB")
small_store = factories.mooncake_store("small_master", "small_nodes", local_buffer_size="8MiB")

"""A small private cluster for the store suites that fill, kill or restart: 2 nodes x 16 MiB."""

from pytest_mooncake import factories

small_master = factories.mooncake_master_proc(lease_ttl="500ms", client_ttl="2s")
small_nodes = factories.mooncake_store_nodes("small_master", count=2, segment_size="16MiB", local_buffer_size="8MiB")
small_store = factories.mooncake_store("small_master", "small_nodes", local_buffer_size="8MiB")

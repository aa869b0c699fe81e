"""Print the README's configuration table from the settings table (run after adding a setting)."""

from __future__ import annotations

from pytest_mooncake.options import SETTINGS
from pytest_mooncake.parsing import parse_bool

YAML_KEYS = {
    "config": "—",
    "master": "`mooncake.master_ip` + `mooncake.master_port`",
    "metadata_url": "`mooncake.metadata_port`",
    "metrics_url": "`mooncake.metrics_port`",
    "protocol": "`mooncake.protocol`",
    "rdma_devices": "`mooncake.device_name`",
    "segment_size": "`mooncake.global_segment_size`",
    "local_buffer_size": "`mooncake.local_buffer_size`",
    "openai_base_url": "`proxy.url`, `openai_api.base_url`",
    "api_key": "`openai_api.api_key`",
    "model": "`model.name`, `openai_api.model_name`",
    "max_tokens": "`model.max_tokens`",
    "temperature": "`model.temperature`",
    "rounds": "`test.rounds`",
    "requests_per_scenario": "`test.requests_per_scenario`",
    "concurrency": "`test.concurrency`",
    "scenarios": "`scenarios`, keys of `test_scenarios`",
}
DEFAULTS = {
    "store_nodes": "2 spawned / 0 attached",
    "lease_ttl": "1s spawned / 10s attached",
    "client_ttl": "5s spawned / 10s attached",
    "scenarios": "all",
    "allow_eviction": "no",
    "kv_pool_size": "1 GiB",
    "multi_host": "no",
    "segment_size": "64 MiB",
    "local_buffer_size": "32 MiB",
    "capacity_deadline": "150s",
    "capacity_step_duration": "10s",
}


def table() -> str:
    rows = ["| Setting | CLI option | ini key | Environment | Guide YAML key | Default |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = DEFAULTS.get(s.name, "—" if s.default in (None, "", ()) else str(s.default))
        yaml_key = YAML_KEYS.get(s.name, f"`{s.name}`")
        cli = s.flag if s.parse is parse_bool else f"{s.flag}={s.metavar}"
        rows.append(f"| {s.help} | `{cli}` | `{s.ini}` | `{s.env}` | {yaml_key} | {default} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(), end="")

"""The one Prometheus parser, as the master's snapshots and the serving counters read it."""

from __future__ import annotations

from pytest_mooncake.cluster.metrics import parse_metrics
from pytest_mooncake.runtime.scrape import sample_sums

# The master's shapes: a counter shown without _total, one with it, a gauge per segment.
MASTER_PAGE = """\
# TYPE master_evicted_key_count counter
master_evicted_key_count 5
# TYPE master_put_start_requests_total counter
master_put_start_requests_total 7
# TYPE segment_allocated_bytes gauge
segment_allocated_bytes{segment="a"} 100
segment_allocated_bytes{segment="b"} 28
# TYPE vllm:hits counter
vllm:hits_total 3
vllm:hits_created 1.7e9
"""


def test_samples_keep_the_names_the_page_shows_with_labels_summed() -> None:
    values = sample_sums(MASTER_PAGE)
    assert values["master_evicted_key_count"] == values["master_evicted_key_count_total"] == 5
    assert values["master_put_start_requests_total"] == values["master_put_start_requests"] == 7
    assert values["segment_allocated_bytes"] == 128
    assert not any(name.endswith("_created") for name in values)


def test_a_key_that_merges_both_names_of_a_counter_counts_it_once() -> None:
    values = sample_sums(MASTER_PAGE, key=lambda name: name.removesuffix("_total"))
    assert values["master_evicted_key_count"] == 5 and values["master_put_start_requests"] == 7
    assert values["vllm:hits"] == 3


def test_snapshot_reads_the_master_names() -> None:
    snapshot = parse_metrics(MASTER_PAGE)
    assert snapshot["master_evicted_key_count"] == 5 and snapshot.get("absent", -1.0) == -1.0

"""Counters from /metrics: name variants, label sums, deltas, quiescence."""

from __future__ import annotations

import pytest

from pytest_mooncake.serving import ClientConfig, Concurrency, RequestSpec, run_requests
from pytest_mooncake.serving.counters import (
    COUNTERS,
    PHASES,
    MetricsReader,
    deltas,
    parse_samples,
    pick,
    wait_until_quiescent,
)

from .fake_openai_server import FakeOpenAIServer

PAGE = """\
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0"} 10.0
vllm:prefix_cache_hits_total{engine="1"} 5.0
vllm:prefix_cache_hits_created{engine="0"} 1.7e9
# TYPE vllm_external_prefix_cache_queries counter
vllm_external_prefix_cache_queries_total 7
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1"} 2
vllm:time_to_first_token_seconds_bucket{le="+Inf"} 3
vllm:time_to_first_token_seconds_count 3
vllm:time_to_first_token_seconds_sum 0.6
"""


def test_names_match_with_or_without_total_and_labels_are_summed() -> None:
    samples = parse_samples(PAGE)
    assert pick(samples, "vllm:prefix_cache_hits_total") == 15.0
    assert pick(samples, "vllm:prefix_cache_hits") == 15.0
    assert pick(samples, "vllm:external_prefix_cache_queries_total") == 7.0  # ':' exported as '_'
    assert pick(samples, ("vllm:gpu_prefix_cache_hits", "vllm:prefix_cache_hits")) == 15.0
    assert pick(samples, "vllm:time_to_first_token_seconds_count") == 3.0
    assert pick(samples, "lmcache:num_hit_tokens") is None


def test_deltas_skip_absent_counters_and_refuse_a_restart() -> None:
    assert deltas({"a": 1.0, "b": None, "c": 2.0}, {"a": 4.0, "b": 3.0}) == {"a": 3.0}
    with pytest.raises(ValueError, match="restarted"):
        deltas({"a": 5.0}, {"a": 1.0}, where="http://x/metrics")


def test_reader_on_the_fake_server_sees_the_requests() -> None:
    with FakeOpenAIServer(ttft=0.0, itl=0.0, tokens=2, cached=4, save_s=0.6) as server:
        read = MetricsReader(server.metrics_url, COUNTERS)
        before = read()
        assert before["lmcache_hit_tokens"] is None and before["prefix_cache_hits"] == 0.0
        config = ClientConfig(server.base_url, "fake", request_timeout_s=5)
        specs = [RequestSpec(str(i), prompt=list(range(10))) for i in range(3)]
        assert all(r.ok for r in run_requests(config, specs))
        right_after = read()
        settled = wait_until_quiescent(read, ["lmcache_stored_tokens"], interval_s=0.05, stable_for_s=0.3, timeout_s=5)
        assert settled.settled and settled.waited_s >= 0.3
        change = deltas(before, settled.values)
        assert change["prefix_cache_queries"] == 30 and change["prefix_cache_hits"] == 12
        assert change["lmcache_stored_tokens"] == 30 and (right_after["lmcache_stored_tokens"] or 0) < 30


def test_quiescence_gives_up_at_the_timeout() -> None:
    now = [0.0]
    value = [0.0]

    def read() -> dict[str, float]:
        value[0] += 1  # always growing
        return {"stored": value[0]}

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = wait_until_quiescent(read, ["stored"], interval_s=1, stable_for_s=3, timeout_s=10,
                                  clock=lambda: now[0], sleep=sleep)
    assert not result.settled and result.waited_s == pytest.approx(10) and result.values["stored"] == result.polls


def test_without_keys_every_counter_read_is_watched() -> None:
    now, polls = [0.0], [0]

    def read() -> dict[str, float]:
        polls[0] += 1
        # "key_count" stops at poll 4, "bytes" appears late and grows until poll 6.
        return {"key_count": min(polls[0], 4), **({"bytes": polls[0]} if 3 <= polls[0] <= 6 else {"bytes": 6} if polls[0] > 6 else {})}

    def sleep(seconds: float) -> None:
        now[0] += seconds

    every = wait_until_quiescent(read, interval_s=1, stable_for_s=3, timeout_s=30, clock=lambda: now[0], sleep=sleep)
    assert every.settled and every.values == {"key_count": 4, "bytes": 6}
    assert every.waited_s == pytest.approx(8)  # "bytes" last grew at t=5 (poll 6), then 3 s stable
    now[0], polls[0] = 0.0, 0
    one = wait_until_quiescent(read, ["key_count"], interval_s=1, stable_for_s=3, timeout_s=30, clock=lambda: now[0], sleep=sleep)
    assert one.waited_s == pytest.approx(6)  # watching one counter would have stopped before "bytes" settled


def test_custom_fetch_is_used() -> None:
    urls = []

    def fetch(url: str) -> str:
        urls.append(url)
        return PAGE

    assert MetricsReader("ns://vllm/metrics", {"hits": "vllm:prefix_cache_hits"}, fetch)() == {"hits": 15.0}
    assert urls == ["ns://vllm/metrics"]


def test_unreachable_metrics_url_says_where() -> None:
    from .test_load import closed_port

    url = f"http://127.0.0.1:{closed_port()}/metrics"
    with pytest.raises(OSError, match=f"GET {url} failed"):
        MetricsReader(url, COUNTERS)()


def test_samples_with_an_operation_label_are_also_kept_per_operation() -> None:
    page = PAGE + """\
# TYPE vllm:mooncake_store_operation_time_seconds histogram
vllm:mooncake_store_operation_time_seconds_sum{engine="0",operation="load_get",status="ok"} 0.25
vllm:mooncake_store_operation_time_seconds_count{engine="0",operation="load_get",status="ok"} 4
vllm:mooncake_store_operation_time_seconds_sum{engine="0",operation="save_put",status="ok"} 2.0
vllm:mooncake_store_operation_time_seconds_count{engine="0",operation="save_put",status="ok"} 9
"""
    samples = parse_samples(page)
    assert pick(samples, "vllm:mooncake_store_operation_time_seconds_sum") == 2.25
    assert pick(samples, "vllm:mooncake_store_operation_time_seconds_sum{operation=load_get}") == 0.25
    assert pick(samples, PHASES["kv_load_s_count"]) == 4
    assert pick(samples, "vllm:prefix_cache_hits{operation=load_get}") is None


def test_the_fake_server_observes_each_requests_phases() -> None:
    with FakeOpenAIServer(ttft=0.05, itl=0.0, tokens=2, slots=1) as server:
        read = MetricsReader(server.metrics_url, PHASES)
        before = read()
        config = ClientConfig(server.base_url, "fake", request_timeout_s=5)
        specs = [RequestSpec(str(i), prompt=list(range(10))) for i in range(2)]
        assert all(r.ok for r in run_requests(config, specs, Concurrency(2)))
        change = deltas(before, read())
        assert change["server_ttft_s_count"] == change["queue_s_count"] == change["prefill_s_count"] == 2
        # One slot: the second request waited for the first's whole answer.
        assert change["queue_s_sum"] >= 0.04 and change["prefill_s_sum"] >= 0.1
        assert change["server_ttft_s_sum"] == pytest.approx(change["queue_s_sum"] + change["prefill_s_sum"], abs=0.01)
        assert "kv_load_s_sum" not in change

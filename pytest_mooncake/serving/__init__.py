"""Measurement engine of the serving suites: streamed requests, load, statistics, verdicts, counters.

Send requests and get one record each (never an exception for a failed request)::

    from pytest_mooncake.serving import ClientConfig, Concurrency, PoissonRate, RequestSpec, run_requests

    config = ClientConfig(base_url="http://127.0.0.1:8000/v1", model="m", request_timeout_s=120)
    specs = [RequestSpec(f"cold-{i}", scenario="high_reuse", round="cold", prompt=ids, max_tokens=16) for ...]
    records = run_requests(config, specs, Concurrency(4))
    records = run_requests(config, specs, PoissonRate(8.0, seed=1, max_concurrency=64))
    # inside a running event loop: await run_requests_async(...); several load levels: sweep(...)

Aggregate and judge::

    stats = round_stats(records, slo=SLO(ttft_ms=500))     # percentiles in ms, rates, goodput, hit rate
    verdict = judge("ttft_reduction", cold_ttfts, hit_ttfts, Rule(">=", 0.60))   # Rule: pytest_mooncake.results.schema
    verdict.outcome                                          # Outcome.PASSED / FAILED / INCONCLUSIVE

Prove reuse on the server::

    read = MetricsReader("http://127.0.0.1:8000/metrics", COUNTERS)      # fetch= for headers or a netns
    before = read(); ...; settled = wait_until_quiescent(read, ["lmcache_stored_tokens"])
    deltas(before, read())["prefix_cache_hits"]

Metric definitions (TTFT, ITL, TPOT, E2E as vLLM ``bench serve`` defines them, counted from the
scheduled send time) are in ``pytest_mooncake.serving.client``.
"""

from pytest_mooncake.serving.client import (
    ClientConfig,
    RequestError,
    RequestRecord,
    RequestSpec,
    RunClock,
    StreamingClient,
)
from pytest_mooncake.serving.counters import (
    COUNTERS,
    PHASES,
    MetricsReader,
    Quiescence,
    deltas,
    parse_samples,
    wait_until_quiescent,
)
from pytest_mooncake.serving.load import (
    Concurrency,
    LoadMode,
    PoissonRate,
    SweepPoint,
    Timestamps,
    arrival_offsets,
    run_requests,
    run_requests_async,
    sweep,
)
from pytest_mooncake.serving.stats import SLO, Estimate, bootstrap, judge, round_stats, run_duration

__all__ = [
    "COUNTERS",
    "PHASES",
    "SLO",
    "ClientConfig",
    "Concurrency",
    "Estimate",
    "LoadMode",
    "MetricsReader",
    "PoissonRate",
    "Quiescence",
    "RequestError",
    "RequestRecord",
    "RequestSpec",
    "RunClock",
    "StreamingClient",
    "SweepPoint",
    "Timestamps",
    "arrival_offsets",
    "bootstrap",
    "deltas",
    "wait_until_quiescent",
    "judge",
    "parse_samples",
    "round_stats",
    "run_duration",
    "run_requests",
    "run_requests_async",
    "sweep",
]

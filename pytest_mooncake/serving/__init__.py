"""Measurement engine of the serving suites: streamed requests, load, statistics, verdicts, counters.

Send requests and get one record each (never an exception for a failed request)::

    from pytest_mooncake.serving import ClientConfig, Concurrency, PoissonRate, RequestSpec, run_requests

    config = ClientConfig(base_url="http://127.0.0.1:8000/v1", model="m", request_timeout_s=120)
    specs = [RequestSpec(f"cold-{i}", scenario="high_reuse", round="cold",
                         messages=[{"role": "user", "content": text}], max_tokens=16) for i, text in ...]
    records = run_requests(config, specs, Concurrency(4), run_timeout_s=600)
    records = run_requests(config, specs, PoissonRate(8.0, seed=1, max_concurrency=64))
    # inside a running event loop: await run_requests_async(...); several load levels: sweep(...)

Aggregate and judge::

    summary = summarize(records, slo=SLO(ttft_ms=500, tpot_ms=50))    # percentiles, rates, goodput, hit rate
    verdict = judge_reduction([r.ttft_s for r in cold if r.ok], [r.ttft_s for r in hit if r.ok],
                              "ttft_reduction >= 0.60", hit_cached_tokens=summarize(hit).cached_tokens)
    assert verdict.passed, verdict.message          # outcome: passed / failed / inconclusive
    judge("tpot_change within ±0.10", bootstrap_effect(cold_tpot, hit_tpot, effect="change"))
    negative_control(cold_ttft, low_reuse_ttft)     # failed = contaminated

Prove reuse on the server::

    read = MetricsReader("http://127.0.0.1:8000/metrics", COUNTERS)      # fetch= for a netns-aware GET
    before = read(); ...; settled = wait_until_quiescent(read, ["lmcache_stored_tokens"])
    deltas(before, read())["prefix_cache_hits"]

Metric definitions (TTFT, ITL, TPOT, E2E as vLLM ``bench serve`` defines them, counted from the
scheduled send time) are in ``pytest_mooncake.serving.client``.
"""

from .client import ClientConfig, RequestError, RequestRecord, RequestSpec, RunClock, StreamingClient, tpot
from .counters import (
    COUNTERS,
    MetricsReader,
    Quiescence,
    canonical,
    deltas,
    fetch_text,
    parse_samples,
    pick,
    wait_until_quiescent,
)
from .load import (
    Concurrency,
    LoadMode,
    PoissonRate,
    SweepPoint,
    arrival_offsets,
    run_requests,
    run_requests_async,
    sweep,
)
from .stats import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    SLO,
    Estimate,
    Percentiles,
    RunSummary,
    Threshold,
    Verdict,
    bootstrap_effect,
    judge,
    judge_reduction,
    negative_control,
    run_duration,
    summarize,
)

__all__ = [
    "COUNTERS",
    "FAILED",
    "INCONCLUSIVE",
    "PASSED",
    "SLO",
    "ClientConfig",
    "Concurrency",
    "Estimate",
    "LoadMode",
    "MetricsReader",
    "Percentiles",
    "PoissonRate",
    "Quiescence",
    "RequestError",
    "RequestRecord",
    "RequestSpec",
    "RunClock",
    "RunSummary",
    "StreamingClient",
    "SweepPoint",
    "Threshold",
    "Verdict",
    "arrival_offsets",
    "bootstrap_effect",
    "canonical",
    "deltas",
    "fetch_text",
    "judge",
    "judge_reduction",
    "negative_control",
    "parse_samples",
    "pick",
    "run_duration",
    "run_requests",
    "run_requests_async",
    "summarize",
    "sweep",
    "tpot",
    "wait_until_quiescent",
]

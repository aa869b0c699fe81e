"""A/B: the endpoint under test against a baseline without KV reuse (guide 002's two modes).

Both endpoints get the same workload; the with-cache endpoint's hit round is compared with
the baseline's, so the gain is what the cache adds over the same engine without it.
"""

from __future__ import annotations

import pytest

from pytest_mooncake import (
    Endpoint,
    Kind,
    MooncakeConfig,
    Outcome,
    Record,
    Round,
    Rule,
    Scenario,
    TokenPool,
    attach_statistics,
    effective_thresholds,
    judge,
    label,
    show,
)
from pytest_mooncake.qualify.protocol import ReuseProtocol

pytestmark = pytest.mark.requires_serving


@pytest.mark.high_reuse
@pytest.mark.mooncake_perf(ttft_reduction=0.60)
def test_ab_high_reuse(
    request: pytest.FixtureRequest,
    openai_endpoint: Endpoint,
    baseline_endpoint: Endpoint,
    token_pool: TokenPool,
    serving_scenarios: dict[str, Scenario],
    mooncake_config: MooncakeConfig,
    mooncake_run_id: str,
    mooncake_record: Record,
) -> None:
    label("scenario", "high_reuse")
    scenario = serving_scenarios["high_reuse"]
    runs = {
        endpoint.label: ReuseProtocol(endpoint, token_pool, mooncake_config, f"{mooncake_run_id}-ab", progress=request.config).run(scenario)
        for endpoint in (baseline_endpoint, openai_endpoint)
    }
    base, cache = runs[baseline_endpoint.label].round(Round.HIT), runs[openai_endpoint.label].round(Round.HIT)
    errors = runs[baseline_endpoint.label].errors() + runs[openai_endpoint.label].errors()
    assert not errors, f"requests failed: {errors[:3]}"
    verdict = judge(
        "ttft_reduction_vs_baseline", base.ttfts(), cache.ttfts(),
        Rule(">=", effective_thresholds(request.node, ("ttft_reduction",))["ttft_reduction"]),
        context=f" ({openai_endpoint.label} vs {baseline_endpoint.label})",
    )
    base_stats, cache_stats = base.stats, cache.stats
    gain = cache_stats["requests_per_s"] / base_stats["requests_per_s"] - 1 if base_stats["requests_per_s"] else 0.0
    data = {
        "scenario": "high_reuse",
        "endpoint": f"{openai_endpoint.label} vs {baseline_endpoint.label}",
        "model": openai_endpoint.model,
        "rounds": [{**base.as_dict(), "round": Round.BASELINE.value}, {**cache.as_dict(), "round": Round.WITH_CACHE.value}],
        "verdicts": [verdict.as_dict()],
        "throughput_gain": gain,
    }
    mooncake_record(Kind.SERVING, "ab_high_reuse", data)
    attach_statistics("ab_high_reuse", data)
    show(request.config, f"[A/B high_reuse] {verdict.message}; throughput gain {gain:+.0%}; "
         f"cached tokens with cache {cache_stats['cached_tokens']}, baseline {base_stats['cached_tokens']}")
    if verdict.outcome is not Outcome.PASSED:
        pytest.fail(verdict.message, pytrace=False)
    assert cache_stats["cached_tokens"] > 0, "a gain with zero cached tokens is not a cache win"

"""Replay real Mooncake traffic: measured cache hits beside what the trace's prefix sharing predicts."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake import Endpoint, Kind, MooncakeConfig, Record, TokenPool, show
from pytest_mooncake.qualify.progress import Progress
from pytest_mooncake.qualify.replay import replay, replayable
from pytest_mooncake.qualify.scenarios import salt_tokens
from pytest_mooncake.qualify.traces import bundled_trace, load_trace

pytestmark = pytest.mark.requires_serving


@pytest.mark.multi_turn
def test_conversation_trace_replay(
    request: pytest.FixtureRequest,
    openai_endpoint: Endpoint,
    token_pool: TokenPool,
    mooncake_config: MooncakeConfig,
    mooncake_run_id: str,
    mooncake_record: Record,
) -> None:
    path = mooncake_config.trace or bundled_trace()
    records = load_trace(path, first_n=mooncake_config.trace_requests)
    salt = salt_tokens(token_pool, f"{mooncake_run_id} replay", length=256)
    fits = {"max_model_len": openai_endpoint.max_model_len(), "scale": mooncake_config.trace_scale}
    with Progress(request.config, f"trace replay {path.name}", len(replayable(records, len(salt), **fits))) as progress:
        result = replay(
            openai_endpoint, records, sorted(set(token_pool.ids)), salt, **fits, speed=mooncake_config.trace_speed, max_in_flight=1,
            timeout=mooncake_config.request_timeout, on_record=progress.record,
        )
    errors = [str(r.error) for r in result.records if r.error]
    predicted = sum(result.predicted_cached)
    ttfts = sorted(r.ttft_s for r in result.records if r.ttft_s is not None) or [float("nan")]
    summary = (
        f"{len(result.records)} requests replayed from {path.name} ({result.skipped} longer than the server's context "
        f"skipped; blocks scaled 512/{mooncake_config.trace_scale}; x{mooncake_config.trace_speed:g} speed): "
        f"theoretical hit ratio {result.theoretical_hit_ratio:.1%}; cached tokens measured {result.measured_cached} vs "
        f"predicted {predicted} of {result.prompt_tokens} prompt tokens; TTFT p50 {1000 * ttfts[len(ttfts) // 2]:.0f} ms"
    )
    mooncake_record(Kind.REPLAY, path.name, {
        "summary": summary, "skipped": result.skipped, "theoretical_hit_ratio": result.theoretical_hit_ratio,
        "measured_cached": result.measured_cached, "predicted_cached": predicted, "prompt_tokens": result.prompt_tokens,
        "records": [{**dataclasses.asdict(r), "predicted_cached": p} for r, p in zip(result.records, result.predicted_cached, strict=True)],
    })
    show(request.config, f"[trace replay] {summary}")
    assert not errors, f"{len(errors)} replayed requests failed, e.g. {errors[:3]}"
    # A cache cannot serve more than the trace shares (one block of slack per request for block rounding).
    assert result.measured_cached <= predicted + len(result.records) * 128, summary
    if predicted:
        assert result.measured_cached > 0, f"the trace shares prefixes but nothing was served from cache: {summary}"

"""Replay real Mooncake traffic: measured cache hits beside what the trace's prefix sharing predicts.

Where the deployment is one vLLM we spawned, whose caches we know the size of, each tier's
measured hits (``vllm:prefix_cache_hits`` for its own prefix cache, ``vllm:external_prefix_cache_hits``
for Mooncake) are also put beside ``tools.tiers.predict_tiers`` for the exact prompts sent,
within ``TIER_TOLERANCE``; the sequence is saved as a trace that ``pytest-mooncake simulate``
predicts again.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from pytest_mooncake import Deployment, Endpoint, Kind, MooncakeConfig, Record, TokenPool, show
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.qualify.kv_budget import KVBudget, count_plans
from pytest_mooncake.qualify.progress import Progress
from pytest_mooncake.qualify.replay import ReplayResult, replay, replay_prompts, replayable
from pytest_mooncake.qualify.scenarios import salt_tokens
from pytest_mooncake.qualify.traces import bundled_trace, load_trace
from pytest_mooncake.tools.tiers import (
    SPAWNED_MODEL,
    TIER_TOLERANCE,
    check_tiers,
    predict_tiers,
    prompt_records,
    spawned_capacity,
    write_trace,
)

pytestmark = pytest.mark.requires_serving

# vLLM logs its own cache as "CPU KV cache size: 262,144 tokens" ("GPU ..." on a GPU).
KV_CACHE_SIZE = re.compile(r"(?:GPU|CPU|[A-Z]+) KV cache size: ([\d,]+) tokens")


@dataclasses.dataclass(frozen=True)
class TierBasis:
    """The cache sizes a per-tier prediction needs, and how the simulate command states them."""

    local_blocks: int | None
    pool_blocks: int | None
    pool_flag: list[str]


def _logged_local_blocks(instance: Endpoint) -> int | str:
    """Usable blocks of a spawned vLLM's own KV cache, from its log (vLLM keeps one as a null block)."""
    log = instance.log_path
    text = log.read_text(errors="replace") if log is not None and log.is_file() else ""
    match = KV_CACHE_SIZE.search(text)
    if match is None:
        return f"the log of {instance.label} ({log}) has no 'KV cache size: N tokens' line to size its cache from"
    return spawned_capacity(round(int(match.group(1).replace(",", "")) / KV_BLOCK_TOKENS))[0]


def _tier_basis(request: pytest.FixtureRequest, deployment: Deployment, config: MooncakeConfig) -> TierBasis | str:
    """The local and pool sizes of a deployment whose tiers can be predicted, else why not."""
    name = deployment.topology.name
    if not deployment.instances or not all(e.spawned for e in deployment.instances):
        return (f"attached endpoint ({name}): its cache sizes are not known here, so its tiers are not compared "
                "with a prediction")
    if len(deployment.instances) != 1 or name not in ("prefix-cache", "tiered"):
        return (f"topology {name}: the per-tier prediction models one vLLM with its own prefix cache and optionally "
                "a Mooncake pool behind it (prefix-cache, tiered)")
    if name == "prefix-cache":
        local = _logged_local_blocks(deployment.instances[0])
        return local if isinstance(local, str) else TierBasis(local, 0, [])
    if deployment.master is None or not deployment.master.spawned:
        return (f"topology {name}: the Mooncake pool is an attached cluster's, whose free room is not known here, so "
                "its tiers are not compared with a prediction")
    pool_bytes = len(request.getfixturevalue("mooncake_kv_pool")) * config.kv_pool_size
    assert deployment.local_blocks is not None  # spawned tiered sizes its cache
    return TierBasis(*spawned_capacity(deployment.local_blocks, pool_bytes),
                     ["--pool-bytes", str(pool_bytes)])


def _compare_tiers(result: ReplayResult, basis: TierBasis | str, sent_trace: Path) -> tuple[dict[str, object], list[str], bool]:
    """The replay's tier record, the lines that show it, and whether a tier is off by more than the tolerance."""
    outputs = [r.completion_tokens or 1 for r in result.records]
    sent = prompt_records(result.prompts, output_lengths=outputs, timestamps_ms=[1000 * s for s in result.offsets_s])
    path = write_trace(sent, sent_trace)
    measured = {"local_tokens": result.local_hit_tokens, "pool_tokens": result.external_hit_tokens,
                "prompt_tokens": result.counters.get("prompt_tokens"), "settled": result.counters_settled}
    if isinstance(basis, str):
        told = f"tiers not compared: {basis}; the sequence sent: {path}"
        return {"compared": False, "reason": basis, "measured": measured, "sent_trace": str(path), "lines": [told]}, [
            f"[trace replay] {told}"], False
    prediction = predict_tiers(sent, local_blocks=basis.local_blocks, pool_blocks=basis.pool_blocks)
    checks = check_tiers(prediction, local_tokens=result.local_hit_tokens, pool_tokens=result.external_hit_tokens)
    command = ["pytest-mooncake", "simulate", str(path), "--block-size", str(KV_BLOCK_TOKENS), "--tiers",
               "--capacity-blocks", str(basis.local_blocks), *basis.pool_flag, "--model", SPAWNED_MODEL]
    record = {"compared": True, "tolerance": TIER_TOLERANCE, "local_blocks": basis.local_blocks,
              "pool_blocks": basis.pool_blocks, "block_tokens": KV_BLOCK_TOKENS, "measured": measured,
              "predicted": {k: v for k, v in prediction.to_dict().items() if k != "requests"},
              "checks": [c.to_dict() for c in checks], "sent_trace": str(path), "command": shlex.join(command),
              "per_request": [dataclasses.asdict(r) for r in prediction.requests]}
    # Kept in the record as told here, so the report tells the same lines.
    record["lines"] = [check.line() for check in checks] + [
        f"predicted for a local cache of {basis.local_blocks} blocks and a Mooncake pool of {basis.pool_blocks} "
        f"blocks; again with: {shlex.join(command)}"]
    return record, [f"[trace replay] {line}" for line in record["lines"]], any(check.within is False for check in checks)


@pytest.mark.multi_turn
def test_conversation_trace_replay(
    request: pytest.FixtureRequest,
    openai_endpoint: Endpoint,
    mooncake_deployment: Deployment,
    token_pool: TokenPool,
    mooncake_config: MooncakeConfig,
    mooncake_run_id: str,
    mooncake_record: Record,
    serving_budget: KVBudget | None,
) -> None:
    path = mooncake_config.trace or bundled_trace()
    records = load_trace(path, first_n=mooncake_config.trace_requests)
    salt = salt_tokens(token_pool, f"{mooncake_run_id} replay", length=256)
    fits = {"max_model_len": openai_endpoint.max_model_len(), "scale": mooncake_config.trace_scale}
    if serving_budget is not None:
        vocab = sorted(set(token_pool.ids))
        records = serving_budget.fit(f"trace replay {path.name}", count_plans(
            records, lambda part: list(replay_prompts(part, vocab, salt, **fits)), "trace requests")).value
    basis = _tier_basis(request, mooncake_deployment, mooncake_config)
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
    results_dir = mooncake_config.results_dir if mooncake_config.results_dir.is_absolute() else \
        request.config.rootpath / mooncake_config.results_dir
    tiers, tier_lines, tier_missed = _compare_tiers(result, basis, results_dir / f"{mooncake_run_id}-replay-{path.stem}.jsonl")
    mooncake_record(Kind.REPLAY, path.name, {
        "summary": summary, "skipped": result.skipped, "theoretical_hit_ratio": result.theoretical_hit_ratio,
        "measured_cached": result.measured_cached, "predicted_cached": predicted, "prompt_tokens": result.prompt_tokens,
        "records": [{**dataclasses.asdict(r), "predicted_cached": p} for r, p in zip(result.records, result.predicted_cached, strict=True)],
        "tiers": tiers,
    })
    show(request.config, f"[trace replay] {summary}")
    for line in tier_lines:
        show(request.config, line)
    assert not errors, f"{len(errors)} replayed requests failed, e.g. {errors[:3]}"
    # A cache cannot serve more than the trace shares (one block of slack per request for block rounding).
    assert result.measured_cached <= predicted + len(result.records) * 128, summary
    if predicted:
        assert result.measured_cached > 0, f"the trace shares prefixes but nothing was served from cache: {summary}"
    assert not tier_missed, "a tier's measured hits are not what the simulator predicts for the prompts sent:\n" + "\n".join(tier_lines)

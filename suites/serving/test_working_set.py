"""Where Mooncake pays off: reuse beyond an instance's own KV cache (the ``working_set`` scenario).

Shared documents whose KV is several times the instance's own cache are revisited in the order
they were first read, which defeats its LRU: by the time a document comes back, the local cache
has evicted it. The same prompts run on ``prefix-cache`` alone (the same small local cache, no
connector) and on the ``tiered`` topology (that cache plus Mooncake behind it). The verdict is
tiered's hit-round TTFT reduction over prefix-cache alone; it passes only with Mooncake hits in
the hit round. Each round's tiers are told beside the simulator's prediction for the exact
sequence of prompts sent.
"""

from __future__ import annotations

import pytest

from pytest_mooncake import (
    Deployment,
    Kind,
    MooncakeConfig,
    Outcome,
    Record,
    Round,
    Rule,
    Scenario,
    Spawner,
    TokenPool,
    attach_statistics,
    effective_thresholds,
    judge,
    label,
    show,
)
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.qualify.protocol import Looks, ReuseProtocol, ScenarioRun, merge_looks, store_counters, verdict_design
from pytest_mooncake.qualify.reuse import evaluate
from pytest_mooncake.qualify.tiers import describe_tiers, tier_shares, within
from pytest_mooncake.tools.tiers import TIER_TOLERANCE, TierPrediction, predict_tiers, prompt_records, spawned_capacity

pytestmark = pytest.mark.requires_serving

# Below this the local LRU might keep a good part of the working set, and the scenario would
# measure the local cache instead of the tier beyond it.
OUTGROWS = 2.0
ALONE, TIERED = "prefix-cache", "tiered"


def _tiered(deployment: Deployment) -> int:
    """The local cache's blocks of a spawned tiered deployment (skips elsewhere, with the reason)."""
    if deployment.topology.name != TIERED:
        pytest.skip(f"compares the tiered topology with prefix-cache alone; this run measures "
                    f"{deployment.topology.name} (run it with --mooncake-topology=tiered)")
    if deployment.local_blocks is None:
        pytest.skip("attached: prefix-cache alone must have the endpoint's own local cache size, which an endpoint we "
                    "did not start does not tell")
    return deployment.local_blocks


def _predicted(protocol: ReuseProtocol, looks: list[ScenarioRun], local_blocks: int,
               pool_blocks: int) -> dict[str, TierPrediction]:
    """``local_blocks``: the usable blocks of the instance's own cache."""
    """The simulator's tiers, round by round, for every request ``protocol`` sent, in order (a look's
    cache reset empties the local cache of prompts no later look reuses: to an LRU, the same)."""
    answered: dict[str, list[int]] = {}
    for run in looks:
        for result in run.rounds:
            for record in result.records:
                answered.setdefault(record.request_id, []).append(record.completion_tokens or 1)
    sent = [(name, spec) for name, spec in protocol.sent if name != Round.WARMUP]
    outputs = [answered[spec.request_id].pop(0) for _, spec in sent]
    prediction = predict_tiers(prompt_records([spec.prompt or () for _, spec in sent], output_lengths=outputs),
                               local_blocks=local_blocks, pool_blocks=pool_blocks)
    rounds: dict[str, list] = {}
    for (name, _), requests in zip(sent, prediction.requests, strict=True):
        rounds.setdefault(name, []).append(requests)
    return {name: TierPrediction(tuple(requests), prediction.local_blocks, pool_blocks, KV_BLOCK_TOKENS)
            for name, requests in rounds.items()}


def _with_prediction(shares: dict[str, object], predicted: TierPrediction) -> dict[str, object]:
    if "reason" in shares:
        return shares
    return {**shares, "predicted": {"local": predicted.local_ratio, "mooncake": predicted.pool_ratio},
            "tolerance": TIER_TOLERANCE}


@pytest.mark.working_set
@pytest.mark.mooncake_perf(ttft_reduction=0.50)
def test_working_set(request: pytest.FixtureRequest, mooncake_deployment: Deployment, mooncake_spawn: Spawner,
                     token_pool: TokenPool, serving_scenarios: dict[str, Scenario], mooncake_config: MooncakeConfig,
                     mooncake_run_id: str, mooncake_record: Record) -> None:
    local_blocks = _tiered(mooncake_deployment)
    scenario = serving_scenarios["working_set"]
    working_set = scenario.requests * (scenario.document_tokens // KV_BLOCK_TOKENS)
    if working_set < OUTGROWS * local_blocks:
        pytest.fail(f"working_set's documents hold {working_set} KV blocks, less than {OUTGROWS:g}x the local cache's "
                    f"{local_blocks}: the local cache could keep them. Raise num_requests or document_tokens of "
                    "test_scenarios.working_set in the --mooncake-config YAML", pytrace=False)
    label("scenario", "working_set")
    label("topology", TIERED)
    rule = Rule(">=", effective_thresholds(request.node, ("ttft_reduction",))["ttft_reduction"])
    with mooncake_spawn.deployment(ALONE, None, local_blocks=local_blocks) as alone:
        # One salt for both: the same prompts, token for token.
        protocols = {
            ALONE: ReuseProtocol(alone.endpoint, token_pool, mooncake_config, mooncake_run_id, topology=alone.topology,
                                 progress=request.config, salt_label="working_set"),
            TIERED: ReuseProtocol(mooncake_deployment.endpoint, token_pool, mooncake_config, mooncake_run_id,
                                  topology=mooncake_deployment.topology, store_counters=store_counters(mooncake_deployment),
                                  progress=request.config, salt_label="working_set"),
        }
        looks: dict[str, list[ScenarioRun]] = {name: [] for name in protocols}
        sequence = Looks(verdict_design(mooncake_config))
        for look in sequence:
            for name, protocol in protocols.items():
                looks[name].append(protocol.run(scenario, look=look))
            runs = {name: merge_looks(taken) for name, taken in looks.items()}
            # Mooncake's proof, output integrity and failed requests, judged as every serving scenario's.
            evaluation = evaluate(runs[TIERED], {}, level=sequence.level)
            verdict = judge("ttft_reduction_vs_prefix_cache", runs[ALONE].round(Round.HIT).ttfts(),
                            runs[TIERED].round(Round.HIT).ttfts(), rule, context=" (tiered vs prefix-cache alone)",
                            level=sequence.level)
            other = [p for p in evaluation.problems if p not in {v.message for v in evaluation.verdicts}]
            sequence.conclude([verdict.outcome] + [v.outcome for v in evaluation.verdicts]
                              + ([Outcome.FAILED] if other else []))
    evaluation = evaluate(runs[TIERED], {}, level=sequence.level, stamp=sequence.stamp)
    verdict = evaluation.judged(verdict)
    store_nodes = len(request.getfixturevalue("mooncake_kv_pool"))  # spawned with the tiered deployment
    usable, pool_blocks = spawned_capacity(local_blocks, store_nodes * mooncake_config.kv_pool_size)
    predicted = {name: _predicted(protocol, looks[name], usable, pool_blocks if name == TIERED else 0)
                 for name, protocol in protocols.items()}
    shares = {name: {str(r.name): _with_prediction(tier_shares(r), predicted[name][str(r.name)]) for r in run.rounds}
              for name, run in runs.items()}
    data = {
        **evaluation.data(),
        "endpoint": f"{TIERED} vs {ALONE}",
        # The report's A/B pair: prefix-cache's hit round against tiered's.
        "rounds": [{**runs[ALONE].round(Round.HIT).as_dict(), "round": Round.BASELINE.value, "tiers": shares[ALONE]["hit"]},
                   {**runs[TIERED].round(Round.HIT).as_dict(), "round": Round.WITH_CACHE.value,
                    "tiers": shares[TIERED]["hit"]}],
        "tiers": shares,
        "local_blocks": local_blocks,
        "working_set_blocks": working_set,
    }
    mooncake_record(Kind.SERVING, "working_set", data)
    attach_statistics("working_set", data)
    lines = [evaluation.summary()] + [f"tiers on {name}, " + "; ".join(describe_tiers(r, s) for r, s in rounds.items())
                                      for name, rounds in shares.items()]
    show(request.config, f"[working_set @ {TIERED} vs {ALONE}] " + "\n".join(lines).replace("\n", "\n[working_set] "))
    # A tier off its prediction is a finding about the simulator or the stack: told with both numbers.
    off = [f"{name} {describe_tiers(r, s)}" for name, rounds in shares.items() for r, s in rounds.items()
           if "predicted" in s and not all(within(s[tier], s["predicted"][tier], s["tolerance"]) for tier in s["predicted"])]
    if evaluation.problems or off:
        pytest.fail("working_set:\n" + "\n".join(evaluation.problems + off), pytrace=False)
    local_misses = shares[ALONE]["hit"]
    assert local_misses.get("local", 1.0) < 0.5, f"prefix-cache alone kept the working set locally: {local_misses}"

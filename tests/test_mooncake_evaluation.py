"""On a Mooncake topology a hit must be a Mooncake hit, and its TTFT is put beside the design's arithmetic."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.topology import TOPOLOGIES
from pytest_mooncake.qualify.capacity import MODELS, ModelShape, predict_hit
from pytest_mooncake.qualify.protocol import RoundResult, ScenarioRun
from pytest_mooncake.qualify.reuse import Explain, evaluate
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.results.schema import Outcome
from pytest_mooncake.serving import RequestRecord

SCENARIO = Scenario("high_reuse", 8, 900, 100, reuse=1.0)


def _record(i: int, round_name: str, ttft: float, cached: int, prompt: int = 1000) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", scenario="high_reuse", round=round_name, api="completions", run_start_epoch_s=0.0,
        run_start_monotonic_s=0.0, scheduled_at_s=0.0, sent_at_s=0.0, finished_at_s=ttft + 0.03, ttft_s=ttft,
        itl_s=(0.01,) * 3, tpot_s=0.01, e2e_s=ttft + 0.03, prompt_tokens=prompt, completion_tokens=4,
        cached_tokens=cached, content_chunks=4, text="same", error=None,
    )


def _run(topology: str | None, external: float | None, cached: int = 896, keys: float = 56) -> ScenarioRun:
    cold = RoundResult("cold", [_record(i, "cold", 1.0 + 0.01 * i, 0) for i in range(8)], 8.0,
                       {"master_key_count": keys, "master_allocated_bytes": keys * 2**19})
    counters = {} if external is None else {"external_prefix_cache_hits": external}
    hit = RoundResult("hit", [_record(i, "hit", 0.1 + 0.001 * i, cached) for i in range(8)], 1.0, counters)
    endpoint = Endpoint("http://127.0.0.1:1/v1", "m", spawned=False, label="test")
    return ScenarioRun(SCENARIO, endpoint, [cold, hit], True, True, (cold.records[0], cold.records[0]),
                       TOPOLOGIES[topology] if topology else None)


def test_external_hits_prove_a_mooncake_win() -> None:
    evaluation = evaluate(_run("mooncake-store", 7168.0), {"ttft_reduction": 0.6})
    assert evaluation.problems == [] and [v.outcome for v in evaluation.verdicts] == [Outcome.PASSED]
    assert evaluation.mooncake == {"topology": "mooncake-store", "connector": "MooncakeStoreConnector",
                                   "external_hit_tokens": 7168.0, "served": True, "stored_keys_cold": 56,
                                   "predicted_blocks_cold": 8 * (1000 // 128), "stored_bytes_cold": 56 * 2**19,
                                   "evicted_keys": 0.0, "polluted": False}
    assert "Mooncake stored +56 keys in the cold round; whole 128-token blocks of its prompts predict 56" in evaluation.notes
    assert evaluation.data()["topology"] == "mooncake-store"


@pytest.mark.parametrize(("external", "shown"), [(0.0, "0.0"), (None, "no")])
def test_a_mooncake_topology_without_external_hits_fails(external: float | None, shown: str) -> None:
    """vLLM's own cache off, yet fast hits without external hits: not Mooncake's win, whatever the TTFT says."""
    evaluation = evaluate(_run("cross-instance", external), {"ttft_reduction": 0.6})
    served = next(v for v in evaluation.verdicts if v.metric == "mooncake_served")
    assert served.outcome == Outcome.FAILED and served.effect == (external or 0.0)
    assert any(p.startswith(f"NOT SERVED BY MOONCAKE: topology cross-instance (MooncakeStoreConnector) had {shown} "
                            "external prefix-cache hit tokens") for p in evaluation.problems)
    assert evaluation.mooncake is not None and evaluation.mooncake["served"] is False
    # The TTFT reduction clears 60%, but a gain Mooncake did not serve cannot pass nor read as met.
    gain = next(v for v in evaluation.verdicts if v.metric == "ttft_reduction")
    assert gain.outcome is Outcome.FAILED and gain.ci_low > 0.6
    assert gain.message.startswith(f"ttft_reduction = {gain.figure} against the threshold >= 60%: NOT CREDITED, Mooncake "
                                   "served none of the hits")
    assert "meets" not in evaluation.summary() and gain.message in evaluation.problems


@pytest.mark.parametrize("topology", ["prefix-cache", None])
def test_other_topologies_need_no_mooncake_proof(topology: str | None) -> None:
    evaluation = evaluate(_run(topology, None), {"ttft_reduction": 0.6})
    assert evaluation.mooncake is None and evaluation.problems == []


def test_a_negative_control_needs_no_external_hits() -> None:
    run = dataclasses.replace(_run("mooncake-store", 0.0, cached=0), scenario=dataclasses.replace(SCENARIO, reuse=0.0))
    evaluation = evaluate(run, {})
    assert not any(v.metric == "mooncake_served" for v in evaluation.verdicts)


def test_whole_blocks_set_the_expected_hit_rate_on_a_mooncake_topology() -> None:
    """900 document tokens: 7 whole blocks (896 tokens) can be stored, so 80.8% cached is a full hit
    there (>= 0.9 x 89.6%), but partial against a token-exact cache (< 0.9 x 90%)."""
    mooncake = evaluate(_run("mooncake-store", 6464.0, cached=808), {})
    local = evaluate(_run("prefix-cache", None, cached=808), {})
    assert not any(n.startswith("PARTIAL HITS") for n in mooncake.notes)
    assert any("(expected about 89.6%)" in n for n in mooncake.notes)
    assert any(n.startswith("PARTIAL HITS: only 80.8%") for n in local.notes)


def test_the_hit_ttft_is_put_beside_the_design_prediction() -> None:
    shape = MODELS["ci-tiny-llama"]
    evaluation = evaluate(_run("mooncake-store", 7168.0), {}, explain=Explain(shape, 1e9))
    prediction = evaluation.prediction
    assert prediction is not None
    # By hand: layers x (4 n^2 d + 22 n d^2) with d = 256, 4 layers; KV 4 x 2 x 2 x 64 x 4 bytes a token.
    flops = [4 * (4 * n**2 * 256 + 22 * n * 256**2) for n in (1000, 896)]
    compute = 1.035 * (1 - flops[1] / flops[0])  # the median cold TTFT of 1.00 .. 1.07 s
    load = 896 * 4096 / 1e9
    assert prediction["compute_ms"] == pytest.approx(compute * 1e3)
    assert prediction["load_ms"] == pytest.approx(load * 1e3)
    assert prediction["predicted_ttft_ms"] == pytest.approx((compute + load) * 1e3)
    assert prediction["measured_ttft_ms"] == pytest.approx(103.5)
    assert prediction["measured_over_predicted"] == pytest.approx(0.1035 / (compute + load))
    assert any(n.startswith("predicted hit TTFT") and "measured 103.5 ms" in n for n in evaluation.notes)


def test_no_prediction_without_a_mooncake_hit() -> None:
    shape = MODELS["ci-tiny-llama"]
    assert evaluate(_run("mooncake-store", 0.0), {}, explain=Explain(shape, 1e9)).prediction is None
    assert evaluate(_run("prefix-cache", None), {}, explain=Explain(shape, 1e9)).prediction is None


def test_an_interleaved_control_predicts_the_keys_of_both_rounds() -> None:
    run = dataclasses.replace(_run("mooncake-store", 0.0, cached=0), interleaved=True,
                              scenario=dataclasses.replace(SCENARIO, reuse=0.0))
    evaluation = evaluate(run, {})
    assert evaluation.mooncake is not None and evaluation.mooncake["predicted_blocks_cold"] == 2 * 8 * (1000 // 128)


@pytest.mark.parametrize(("prompt", "cached", "bandwidth"), [(100, 101, 1e9), (0, 0, 1e9), (100, 50, 0.0), (100, -1, 1e9)])
def test_predict_hit_refuses_impossible_inputs(prompt: int, cached: int, bandwidth: float) -> None:
    with pytest.raises(ValueError, match="need 0 <= cached"):
        predict_hit(ModelShape(1, 8, 1, 1, 8, 8, 8), prompt, cached, 1.0, bandwidth)


def test_a_full_hit_costs_only_the_load() -> None:
    shape = ModelShape(2, 64, 4, 2, 16, 128, 100, dtype_bytes=2)
    hit = predict_hit(shape, 512, 512, 2.0, 1e6)
    assert hit.compute_s == 0.0 and hit.kv_bytes == 512 * 2 * 2 * 2 * 16 * 2 and hit.ttft_s == hit.load_s == hit.kv_bytes / 1e6


def test_the_failed_mooncake_verdict_and_its_message_are_exact() -> None:
    evaluation = evaluate(_run("cross-instance", 0.0), {})
    message = ("NOT SERVED BY MOONCAKE: topology cross-instance (MooncakeStoreConnector) had 0.0 external prefix-cache hit "
               "tokens in the hit round (vllm:external_prefix_cache_hits); a gain here is not Mooncake's, so no verdict "
               "on it can pass")
    assert [v.as_dict() for v in evaluation.verdicts] == [{
        "metric": "mooncake_served", "statistic": None, "effect": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_before": 8,
        "n_after": 8, "op": ">", "threshold": 0, "outcome": "failed", "strata": 1, "message": message}]
    assert evaluation.problems == [message]


def test_one_external_hit_token_is_a_mooncake_hit() -> None:
    evaluation = evaluate(_run("mooncake-store", 1.0), {})
    assert evaluation.mooncake is not None and evaluation.mooncake["served"] is True and evaluation.problems == []


def test_counters_and_the_interleaved_note_read_exactly() -> None:
    run = _run("mooncake-store", 5.0)
    run.rounds[1].counters["prefix_cache_hits"] = 2.0
    notes = evaluate(dataclasses.replace(run, interleaved=True), {}).notes
    assert notes[0].endswith("; counters external_prefix_cache_hits +5, prefix_cache_hits +2")
    assert notes[1] == ("Mooncake stored +56 keys in the cold round (and the hit round interleaved with it); whole "
                        "128-token blocks of its prompts predict 112")


def test_the_prediction_is_recorded_and_told_exactly() -> None:
    shape = MODELS["ci-tiny-llama"]
    evaluation = evaluate(_run("mooncake-store", 7168.0), {}, explain=Explain(shape, 2e9))
    flops = [4 * (4 * n**2 * 256 + 22 * n * 256**2) for n in (1000, 896)]
    compute_ms = 1035 * (1 - flops[1] / flops[0])
    kv = 896 * 4096
    load_ms = kv / 2e9 * 1e3
    predicted = compute_ms + load_ms
    assert evaluation.prediction == pytest.approx({
        "predicted_ttft_ms": predicted, "measured_ttft_ms": 103.5, "measured_over_predicted": 103.5 / predicted,
        "compute_ms": compute_ms, "load_ms": load_ms, "kv_bytes": kv, "prompt_tokens": 1000, "cached_tokens": 896,
        "read_gbps": 2.0})
    assert evaluation.notes[-1] == (
        f"predicted hit TTFT {predicted:.1f} ms = recompute of the uncached tail {compute_ms:.1f} ms + loading "
        f"{kv / 2**20:.1f} MiB of KV at 2.00 GB/s {load_ms:.1f} ms; measured 103.5 ms "
        f"({103.5 / predicted:.2f}x the prediction)")


def test_only_answered_hits_with_cached_tokens_are_predicted() -> None:
    """Requests that cached nothing or failed say nothing about a hit's TTFT; without any, no prediction."""
    shape = MODELS["ci-tiny-llama"]
    run = _run("mooncake-store", 7168.0)
    hit = run.rounds[1]
    hit.records[0] = dataclasses.replace(hit.records[0], cached_tokens=0, ttft_s=9.0)
    hit.records[1] = dataclasses.replace(hit.records[1], ttft_s=None)
    prediction = evaluate(run, {}, explain=Explain(shape, 1e9)).prediction
    assert prediction is not None and prediction["measured_ttft_ms"] == pytest.approx(104.5)
    none_cached = _run("mooncake-store", 7168.0, cached=0)
    assert evaluate(none_cached, {}, explain=Explain(shape, 1e9)).prediction is None


def test_the_reader_is_named_in_the_data() -> None:
    reader = Endpoint("http://127.0.0.1:2/v1", "m", spawned=False, label="reader")
    data = evaluate(dataclasses.replace(_run("cross-instance", 7168.0), hit_endpoint=reader), {}).data()
    assert (data["topology"], data["hit_endpoint"]) == ("cross-instance", "reader")


def test_the_note_converts_bytes_per_second_and_seconds_exactly() -> None:
    """896 cached tokens x 4,096 bytes = 3.5 MiB of KV. At 36,700,160 bytes/s it loads in exactly 100 ms (0.04 GB/s);
    at 2,125,000,001 bytes/s, 2.125000001 GB/s, printed 2.13, in 3,670,016 / 2,125,000,001 s = 1.7 ms."""
    shape = MODELS["ci-tiny-llama"]
    slow = evaluate(_run("mooncake-store", 7168.0), {}, explain=Explain(shape, 36_700_160))
    assert "+ loading 3.5 MiB of KV at 0.04 GB/s 100.0 ms; measured 103.5 ms" in slow.notes[-1]
    fast = evaluate(_run("mooncake-store", 7168.0), {}, explain=Explain(shape, 2_125_000_001))
    assert "+ loading 3.5 MiB of KV at 2.13 GB/s 1.7 ms; measured 103.5 ms" in fast.notes[-1]
    assert fast.prediction is not None and fast.prediction["read_gbps"] == pytest.approx(2.125000001, rel=1e-12)


def test_a_mooncake_hit_without_a_prediction_says_why() -> None:
    """Attach mode: the results carried "prediction": null and nothing said why (issue 19)."""
    reason = "attach mode: the served model's shape is unknown"
    evaluation = evaluate(_run("mooncake-store", 7168.0), {}, explain=reason)
    data = evaluation.data()
    assert (data["prediction"], data["no_prediction"]) == (None, reason)
    assert f"no predicted hit TTFT: {reason}" in evaluation.notes
    assert f"no predicted hit TTFT: {reason}" in evaluation.summary()
    # With the figures there is a prediction and no reason; off Mooncake there is neither.
    assert evaluate(_run("mooncake-store", 7168.0), {}, explain=Explain(MODELS["ci-tiny-llama"], 1e9)).no_prediction is None
    local = evaluate(_run("prefix-cache", None), {}, explain=reason)
    assert (local.prediction, local.no_prediction) == (None, None)

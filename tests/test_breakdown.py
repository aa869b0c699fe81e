"""Where a round's TTFT goes: vLLM's phase histograms against the client's TTFTs."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake.qualify.breakdown import describe, ttft_breakdown
from pytest_mooncake.qualify.protocol import RoundResult
from pytest_mooncake.qualify.reuse import evaluate
from pytest_mooncake.results.schema import Round
from pytest_mooncake.qualify.capacity import MODELS
from pytest_mooncake.qualify.reuse import Explain
from tests.test_mooncake_evaluation import _run as _mooncake_run
from tests.test_reuse import _record, _run

# Four requests whose client TTFTs average 100 ms; the server saw 90 ms of it: 10 queued, 70 in
# prefill (30 of them loading KV from the store in 8 loads), 10 before the engine.
COUNTERS = {"server_ttft_s_sum": 0.36, "server_ttft_s_count": 4, "queue_s_sum": 0.04, "queue_s_count": 4,
            "prefill_s_sum": 0.28, "prefill_s_count": 4, "kv_load_s_sum": 0.12, "kv_load_s_count": 8}
RECORDS = [_record(i, "hit", t, 896) for i, t in enumerate((0.09, 0.1, 0.1, 0.11))]


def test_the_parts_add_up_to_the_clients_mean_ttft() -> None:
    parts = ttft_breakdown(RECORDS, COUNTERS)
    assert parts == {"requests": 4, "ttft_ms": pytest.approx(100), "queue_ms": pytest.approx(10),
                     "prefill_ms": pytest.approx(70), "server_other_ms": pytest.approx(10),
                     "client_hop_ms": pytest.approx(10), "kv_load_ms": pytest.approx(30), "kv_loads": 8}
    assert sum(parts[f"{p}_ms"] for p in ("queue", "prefill", "server_other", "client_hop")) == pytest.approx(100)
    assert describe("hit", parts) == ("hit 100 ms = queue 10 + prefill 70 (KV load 30 in 8 loads) + server other 10 "
                                      "+ client hop 10")
    no_store = ttft_breakdown(RECORDS, {k: v for k, v in COUNTERS.items() if not k.startswith("kv_load")})
    assert no_store["kv_load_ms"] is None and "KV load" not in describe("hit", no_store)


def test_a_round_counted_twice_or_unmeasured_gets_the_reason() -> None:
    doubled = {k: v * 2 for k, v in COUNTERS.items()}  # prefill and decode instances both observed each request
    assert ttft_breakdown(RECORDS, doubled) == {"unavailable": "the server's histograms counted 8 requests where the "
                                                "round judged 4: requests it does not judge (a conversation's first "
                                                "turns), a second instance or another client were counted too"}
    assert "exports no server_ttft_s, queue_s, prefill_s" in ttft_breakdown(RECORDS, {})["unavailable"]
    failed = [dataclasses.replace(r, ttft_s=None) for r in RECORDS]
    assert ttft_breakdown(failed, COUNTERS) == {"unavailable": "no request of the round yielded a first token"}
    assert describe("cold", ttft_breakdown(failed, COUNTERS)) == \
        "cold: no breakdown (no request of the round yielded a first token)"


def test_every_round_record_and_the_verdicts_notes_carry_it() -> None:
    run = _run(0.1, 896)
    cold_counters = {k: v * 2 if k.endswith("_count") else v * 10 for k, v in COUNTERS.items()}
    hit_counters = {k: v * 2 for k, v in COUNTERS.items()}  # 8 requests, the same means
    run.rounds = [dataclasses.replace(run.rounds[0], counters=cold_counters),
                  dataclasses.replace(run.rounds[1], counters=hit_counters)]
    assert run.round(Round.HIT).as_dict()["breakdown"] == ttft_breakdown(run.round(Round.HIT).records,
                                                                          run.round(Round.HIT).counters)
    notes = [n for n in evaluate(run, {"ttft_reduction": 0.6}).notes if n.startswith("TTFT breakdown")]
    assert notes == ["TTFT breakdown, mean per request: cold 1035 ms = queue 50 + prefill 350 (KV load 150 in 16 loads) "
                     "+ server other 50 + client hop 585; hit 104 ms = queue 10 + prefill 70 (KV load 30 in 16 loads) "
                     "+ server other 10 + client hop 14"]
    # No /metrics at all: the hit-rate note says so, no breakdown line.
    assert not [n for n in evaluate(_run(0.1, 896), {"ttft_reduction": 0.6}).notes if n.startswith("TTFT breakdown")]


def test_a_round_result_without_requests_has_no_breakdown() -> None:
    assert RoundResult("hit", [], 0.0).as_dict()["breakdown"] == {"unavailable": "no request of the round yielded a first token"}


def test_the_hit_rounds_split_is_put_beside_the_designs_prediction() -> None:
    shape = MODELS["ci-tiny-llama"]
    run = _mooncake_run("mooncake-store", 7168.0)
    run.rounds[1].counters.update({k: v * 2 for k, v in COUNTERS.items()})  # 8 requests, the same means
    evaluation = evaluate(run, {}, explain=Explain(shape, 2e9))
    assert evaluation.prediction is not None
    assert (evaluation.prediction["measured_prefill_ms"], evaluation.prediction["measured_kv_load_ms"]) == \
        (pytest.approx(70), pytest.approx(30))
    assert evaluation.notes[-1].endswith("; the server's mean prefill 70.0 ms, of which KV load 30.0 ms")

"""Which cache tier served a round: vLLM's local prefix-cache hits against the connector's."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake.qualify.protocol import RoundResult
from pytest_mooncake.qualify.tiers import describe_tiers, tier_shares, within
from pytest_mooncake.serving.client import RequestError
from tests.test_reuse import _record

RECORDS = [_record(i, "hit", 0.05, 1000) for i in range(4)]


def test_each_tier_is_a_share_of_the_rounds_prompt_tokens() -> None:
    shares = tier_shares(RoundResult("hit", RECORDS, 1.0, {"prefix_cache_hits": 1000, "external_prefix_cache_hits": 2500}))
    assert shares == {"prompt_tokens": 4000, "local_tokens": 1000, "mooncake_tokens": 2500, "local": 0.25,
                      "mooncake": 0.625, "computed": pytest.approx(0.125)}
    assert describe_tiers("hit", shares) == "hit: local 25.0%, Mooncake 62.5%, computed 12.5% of 4,000 prompt tokens"


def test_a_server_without_a_connector_counts_no_mooncake_hits() -> None:
    shares = tier_shares(RoundResult("hit", RECORDS, 1.0, {"prefix_cache_hits": 4000}))
    assert (shares["local"], shares["mooncake"], shares["computed"]) == (1.0, 0.0, 0.0)


def test_a_round_without_counters_or_answers_says_why() -> None:
    assert tier_shares(RoundResult("hit", RECORDS, 1.0, {})) == {"reason": "the server exports no vllm:prefix_cache_hits"}
    failed = [dataclasses.replace(RECORDS[0], ttft_s=None, error=RequestError("timeout", "no answer in 60 s"))]
    shares = tier_shares(RoundResult("hit", failed, 1.0, {"prefix_cache_hits": 0}))
    assert describe_tiers("hit", shares) == "hit: no tier split (no request was answered)"


def test_each_tier_is_told_beside_its_prediction_and_a_miss_is_named() -> None:
    shares = {**tier_shares(RoundResult("hit", RECORDS, 1.0, {"prefix_cache_hits": 1000, "external_prefix_cache_hits": 2500})),
              "predicted": {"local": 0.25, "mooncake": 0.6}, "tolerance": 0.01}
    assert describe_tiers("hit", shares) == ("hit: local 25.0% (predicted 25.0%), Mooncake 62.5% (predicted 60.0%), "
                                             "computed 12.5% of 4,000 prompt tokens; mooncake off the prediction by "
                                             "more than 1 point")
    assert within(0.25, 0.25, 0.0) and within(0.26, 0.25, 0.01) and not within(0.625, 0.6, 0.01)

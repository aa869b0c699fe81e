"""The protocol on a two-instance topology: the cold round goes to the writer, every later round to the reader."""

from __future__ import annotations

import pytest

from pytest_mooncake.config.markers import gpu_present
from pytest_mooncake.config.options import TOPOLOGY_NAMES, MooncakeConfig
from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.tokens import TokenPool
from pytest_mooncake.endpoints.topology import TOPOLOGIES, split_cores
from pytest_mooncake.qualify.protocol import ReuseProtocol
from pytest_mooncake.qualify.scenarios import Scenario
from pytest_mooncake.results.schema import Round

from .fake_openai_server import FakeOpenAIServer

POOL = TokenPool(tuple(range(1000, 9000)) * 4)
CONFIG = MooncakeConfig.from_defaults(request_timeout=30)


def _endpoint(server: FakeOpenAIServer, label: str) -> Endpoint:
    return Endpoint(server.base_url, server.model, spawned=False, label=label)


def test_cold_goes_to_the_writer_and_hits_to_the_reader() -> None:
    with FakeOpenAIServer(ttft=0.01, itl=0.001, tokens=2) as writer, \
            FakeOpenAIServer(ttft=0.01, itl=0.001, tokens=2, cached=96) as reader:
        protocol = ReuseProtocol(_endpoint(writer, "writer"), POOL, CONFIG, "xi", hit_endpoint=_endpoint(reader, "reader"),
                            topology=TOPOLOGIES["cross-instance"])
        run = protocol.run(Scenario("high_reuse", 3, 200, 50, reuse=1.0, max_tokens=2))
        on_writer, on_reader = set(writer.timings()), set(reader.timings())
    assert {"high_reuse-cold-0", "high_reuse-cold-1", "high_reuse-cold-2"} <= on_writer
    assert not any(rid.startswith(("high_reuse-hit", "high_reuse-repeat")) for rid in on_writer)
    assert {"high_reuse-hit1-0", "high_reuse-hit1-1", "high_reuse-hit1-2"} <= on_reader
    assert not any("cold" in rid for rid in on_reader - {"high_reuse-cold-0"}), "only the exact repeat goes there"
    # Both instances were warmed up; the reader's cached tokens show in the hit round only.
    assert any(rid.startswith("warmup-writer") for rid in on_writer) and any(rid.startswith("warmup-reader") for rid in on_reader)
    assert [r.name for r in run.rounds] == ["cold", "hit", "repeat"]
    assert run.round("cold").stats["cached_tokens"] == 0 and run.round("hit").stats["cached_tokens"] == 3 * 96
    assert run.hit_endpoint is not None and run.hit_endpoint.label == "reader" and run.topology is TOPOLOGIES["cross-instance"]
    # Counters of both instances are summed: the reader's prefix-cache hits grow in the hit round.
    assert run.round("hit").counters["prefix_cache_hits"] == 3 * 96


def test_a_control_on_two_instances_is_not_interleaved() -> None:
    with FakeOpenAIServer(ttft=0.01, itl=0.001, tokens=2) as writer, FakeOpenAIServer(ttft=0.01, itl=0.001, tokens=2) as reader:
        protocol = ReuseProtocol(_endpoint(writer, "writer"), POOL, CONFIG, "xi", hit_endpoint=_endpoint(reader, "reader"),
                            warm_up=False)
        run = protocol.run(Scenario("low_reuse", 2, 0, 100, reuse=0.0, max_tokens=2))
        assert {"low_reuse-cold-0", "low_reuse-cold-1"} <= set(writer.timings())
        assert {"low_reuse-hit1-0", "low_reuse-hit1-1"} <= set(reader.timings())
    assert not run.interleaved and [r.name for r in run.rounds] == ["cold", "hit"]


def test_multi_turn_counts_the_counters_of_every_turn() -> None:
    with FakeOpenAIServer(ttft=0.01, itl=0.001, tokens=2, cached=10) as server:
        protocol = ReuseProtocol(_endpoint(server, "one"), POOL, CONFIG, "mt", warm_up=False)
        run = protocol.run(Scenario("multi_turn", 2, 100, 20, reuse=1.0, turns=3, max_tokens=2))
    # 2 conversations x 3 turns, each turn 10 cached tokens on the double's counters.
    assert run.round("hit").counters["prefix_cache_hits"] == 2 * 3 * 10


def test_every_topology_setting_is_described() -> None:
    assert tuple(TOPOLOGIES) == TOPOLOGY_NAMES


@pytest.mark.parametrize(("topology", "cause"), [("pd", "vLLM's MooncakeConnector needs an accelerator"),
                                                 ("lmcache", "LMCache's wheels need CUDA")])
def test_gpu_only_topologies_skip_on_a_cpu_host_with_the_cause(pytester: pytest.Pytester, topology: str,
                                                               cause: str) -> None:
    if gpu_present():
        pytest.skip("this host has a GPU: the topology would run")
    pytester.makepyfile(test_serve="def test_serve(openai_endpoint):\n    raise AssertionError('spawned')\n")
    result = pytester.runpytest("-rs", f"--mooncake-topology={topology}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"SKIPPED * topology {topology}: {cause}*"])


def test_prefiller_and_decoder_get_disjoint_halves_of_the_cores() -> None:
    assert split_cores([3, 1, 2, 0]) == ("0,1", "2,3")
    assert split_cores([0, 1, 2]) == ("0", "1,2")
    assert split_cores([0, 1]) == ("0", "1")
    assert split_cores([5]) is None, "one core cannot be split: no binding"


@pytest.mark.parametrize(("scenario", "rounds"), [
    (Scenario("high_reuse", 2, 100, 20, reuse=1.0, rounds=3, max_tokens=2), [Round.COLD, Round.HIT, Round.hit(2), Round.REPEAT]),
    (Scenario("low_reuse", 2, 0, 100, reuse=0.0, max_tokens=2), [Round.COLD, Round.HIT]),  # interleaved
    (Scenario("multi_turn", 2, 100, 20, reuse=1.0, turns=2, max_tokens=2), [Round.COLD, Round.HIT]),
])
def test_every_round_is_named_by_the_round_enum(scenario: Scenario, rounds: list[str]) -> None:
    with FakeOpenAIServer(ttft=0.01, itl=0.001, tokens=2) as server:
        run = ReuseProtocol(_endpoint(server, "one"), POOL, CONFIG, "rounds", warm_up=False).run(scenario)
    assert [r.name for r in run.rounds] == rounds
    assert all(isinstance(r.name, Round) for r in run.rounds if r.name != Round.hit(2))
    assert {rec.round for rec in run.round(Round.COLD).records} == {Round.COLD}
    assert [r.as_dict()["round"] for r in run.rounds] == [str(name) for name in rounds]

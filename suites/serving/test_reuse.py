"""Does KV-cache reuse cut time-to-first-token as much as it should, scenario by scenario?

Each test runs the cold-versus-hit protocol (warm-up, cache reset, salted cold round,
settle, hit round) against the endpoint under test in looks (a sequential verdict: it stops at
the first conclusive look), and passes only when the TTFT reduction's whole confidence
interval clears the threshold, hits show cached tokens,
and cache-hit output equals cold output.
"""

from __future__ import annotations

import pytest

from pytest_mooncake import Kind, MooncakeConfig, Record, Scenario, attach_statistics, effective_thresholds, label, show
from pytest_mooncake.config.markers import SCENARIOS, check_perf_markers
from pytest_mooncake.qualify.protocol import ReuseProtocol, verdict_design
from pytest_mooncake.qualify.reuse import measure

pytestmark = pytest.mark.requires_serving

# What a --mooncake-profile may add to a scenario with reuse; the controls keep their own.
REUSE_KEYS = ("ttft_reduction", "throughput_gain", "tpot_change", "ttft_p90_ms", "match_tokens")
CONTROL_KEYS = ("control_gain",)


def _check(name: str, request: pytest.FixtureRequest, keys: tuple[str, ...] = REUSE_KEYS) -> None:
    scenarios: dict[str, Scenario] = request.getfixturevalue("serving_scenarios")
    protocol: ReuseProtocol = request.getfixturevalue("serving_protocol")
    record: Record = request.getfixturevalue("mooncake_record")
    label("scenario", name)
    label("topology", protocol.topology.name if protocol.topology else "attached")
    label("connector", protocol.topology.connector or "none" if protocol.topology else "unknown")
    evaluation = measure(protocol, scenarios[name], effective_thresholds(request.node, keys),
                         verdict_design(protocol.config),
                         tokenizer=request.getfixturevalue("serving_tokenizer"),
                         explain=request.getfixturevalue("serving_explain"))
    run = evaluation.run
    data = evaluation.data()
    record(Kind.SERVING, name, data)
    attach_statistics(name, data)
    where = run.topology.name if run.topology else run.endpoint.label
    show(request.config, f"[{name} @ {where}] " + evaluation.summary().replace("\n", f"\n[{name}] "))
    if evaluation.problems:
        pytest.fail(f"{name} on {run.endpoint.base_url}:\n" + "\n".join(evaluation.problems), pytrace=False)


@pytest.mark.high_reuse
@pytest.mark.mooncake_perf(ttft_reduction=0.60)
def test_high_reuse(request: pytest.FixtureRequest) -> None:
    """One long shared document per request, asked a new question: >= 90% of the prompt is reusable."""
    _check("high_reuse", request)


@pytest.mark.medium_reuse
@pytest.mark.mooncake_perf(ttft_reduction=0.25)
def test_medium_reuse(request: pytest.FixtureRequest) -> None:
    """Half of the hit round reuses documents, half is new: the round's TTFT (each half's median,
    weighted by its share) must drop by a quarter."""
    _check("medium_reuse", request)


@pytest.mark.low_reuse
@pytest.mark.mooncake_perf(control_gain=0.10)
def test_low_reuse_negative_control(request: pytest.FixtureRequest) -> None:
    """Unique prompts: any gain above 10% (or any cached token) means the measurement is contaminated."""
    _check("low_reuse", request, keys=CONTROL_KEYS)


@pytest.mark.long_context
@pytest.mark.mooncake_perf(ttft_reduction=0.60)
def test_long_context(request: pytest.FixtureRequest) -> None:
    """Long documents (up to 32k tokens or the server's limit) reused with a new question."""
    _check("long_context", request)


@pytest.mark.long_context_high_reuse
@pytest.mark.high_reuse
@pytest.mark.mooncake_perf(ttft_reduction=0.60)
def test_long_context_high_reuse(request: pytest.FixtureRequest) -> None:
    """Long shared documents asked several questions (the evaluation report's document analysis)."""
    _check("long_context_high_reuse", request)


@pytest.mark.multi_turn
@pytest.mark.mooncake_perf(ttft_reduction=0.50)
def test_multi_turn(request: pytest.FixtureRequest) -> None:
    """A conversation whose history grows every turn; later turns reuse ~85% of their prompt."""
    _check("multi_turn", request)


@pytest.mark.cold_start
def test_cold_start(request: pytest.FixtureRequest) -> None:
    """First requests after a cache reset: all answered, nothing served from cache."""
    _check("cold_start", request, keys=("ttft_p90_ms",))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.name == "test_user_scenario":
        config = MooncakeConfig.of(metafunc.config)
        wanted = set(config.scenarios)
        names = [n for n in config.scenario_definitions if n not in SCENARIOS and (not wanted or n in wanted)]
        metafunc.parametrize("user_scenario", names or [pytest.param(None, marks=pytest.mark.skip(
            reason="no user scenarios: define them under test_scenarios in the --mooncake-config YAML"))])


def test_user_scenario(request: pytest.FixtureRequest, user_scenario: str) -> None:
    """A scenario defined in the YAML (test_scenarios.NAME), judged on the thresholds it states
    there (e.g. ``ttft_reduction: 0.5``) or the profile's."""
    definition = MooncakeConfig.of(request.config).scenario_definitions[user_scenario]
    for key in REUSE_KEYS:
        if key in definition:
            request.node.add_marker(pytest.mark.mooncake_perf(**{key: definition[key]}))
    check_perf_markers([request.node])
    _check(user_scenario, request)

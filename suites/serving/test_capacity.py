"""Capacity, not latency: the highest request rate each topology sustains at the SLO, and the cache's gain.

Every topology gets the same workload mix as open-loop Poisson load at rising rates
(``pytest_mooncake.qualify.capacity_search``). The SLO is the same for all of them: by default TTFT
p90 <= 4x the baseline's unloaded TTFT, measured in this run, so the search finds a knee on a
slow, busy host as on a fast one. The deadline (``--mooncake-capacity-deadline``) covers the
whole search after the servers are up; each topology gets a share in proportion to its unloaded
end-to-end latency, since its steps last that much longer. The gain in requests/s at the SLO over the baseline is judged
on the interval both capacities allow (``mooncake_perf(capacity_gain=...)``).
"""

from __future__ import annotations

import time

import pytest

from pytest_mooncake import (
    Deployment,
    Endpoint,
    Kind,
    MooncakeConfig,
    Outcome,
    Record,
    Rule,
    Scenario,
    TokenPool,
    effective_thresholds,
    factories,
    label,
    show,
)
from pytest_mooncake.qualify.capacity_search import CapacityResult, CapacitySLO, ScenarioWorkload, SearchPlan, Step, calibrate, capacity_gain, search

pytestmark = pytest.mark.requires_serving

REFERENCE = "baseline"
# A Mooncake topology of its own beside the session's (prefix-cache by default), stopped after this module.
capacity_mooncake_store = factories.mooncake_deployment(scope="module", topology="mooncake-store")


def _topologies(config: MooncakeConfig) -> dict[str, str]:
    """Topology name -> the fixture that yields its Endpoint, the reference first. A topology whose
    fixture skips (not installed, not configured, GPU-only) is reported as unavailable."""
    fixtures = {REFERENCE: "baseline_endpoint", config.topology: "openai_endpoint"}
    # Only beside a cluster we spawned: on an attached one it would fill the user's pool unasked.
    if config.openai_base_url is None and not config.attach:
        fixtures.setdefault("mooncake-store", "capacity_mooncake_endpoint")
    return fixtures


@pytest.fixture(scope="module")
def capacity_mooncake_endpoint(capacity_mooncake_store: Deployment) -> Endpoint:
    return capacity_mooncake_store.endpoint
# Document QA: every request asks a new question about one of 8 shared documents, long enough
# that prefill, which the cache saves, outweighs the short answer's decoding.
CAPACITY_MIX = Scenario("capacity_mix", requests=8, document_tokens=2048, question_tokens=64, reuse=1.0, max_tokens=8)


def _endpoints(request: pytest.FixtureRequest, config: MooncakeConfig) -> tuple[dict[str, Endpoint], dict[str, str]]:
    found, unavailable = {}, {}
    for topology, fixture in _topologies(config).items():
        try:
            found[topology] = request.getfixturevalue(fixture)
        except pytest.skip.Exception as exc:
            if topology == REFERENCE:
                raise
            unavailable[topology] = str(exc)
    return found, unavailable


def _slo(config: MooncakeConfig, ttft_ms: float, tpot_ms: float | None) -> CapacitySLO:
    tpot = None
    if config.capacity_tpot_slo is not None:
        if tpot_ms is None and config.capacity_tpot_slo.ms is None:
            pytest.fail(f"--mooncake-capacity-tpot-slo={config.capacity_tpot_slo} is relative to the baseline's TPOT, but "
                        "its answers had one token; give an absolute limit (e.g. 50ms) or raise the scenario's max_tokens",
                        pytrace=False)
        tpot = config.capacity_tpot_slo.resolve(tpot_ms or 0.0)
    return CapacitySLO(config.capacity_ttft_slo.resolve(ttft_ms), tpot)


@pytest.mark.mooncake_perf(capacity_gain=0.5)
def test_capacity_gain(
    request: pytest.FixtureRequest,
    token_pool: TokenPool,
    serving_scenarios: dict[str, Scenario],
    mooncake_config: MooncakeConfig,
    mooncake_run_id: str,
    mooncake_record: Record,
) -> None:
    """Highest Poisson rate meeting the SLO per topology; the cache must carry more at the same SLO."""
    label("scenario", "capacity")
    config = mooncake_config
    if config.capacity_scenario and config.capacity_scenario not in serving_scenarios:
        pytest.fail(f"--mooncake-capacity-scenario={config.capacity_scenario}: no such scenario; known: "
                    f"{', '.join(serving_scenarios)} (or leave it unset for the built-in document mix)", pytrace=False)
    scenario = serving_scenarios[config.capacity_scenario] if config.capacity_scenario else CAPACITY_MIX
    endpoints, unavailable = _endpoints(request, config)
    started = time.monotonic()  # the deadline covers the search, not the servers' start-up
    workloads = {
        topology: ScenarioWorkload(scenario, token_pool, f"{mooncake_run_id} capacity {topology}",
                                   lambda spec, e=endpoint: e.prepare(spec, config.temperature))
        for topology, endpoint in endpoints.items()
    }
    calibrations = {topology: calibrate(endpoint, workloads[topology], config.request_timeout)
                    for topology, endpoint in endpoints.items()}
    reference = calibrations[REFERENCE]
    slo = _slo(config, reference.ttft_ms, reference.tpot_ms)
    show(request.config, f"[capacity] SLO {slo} (baseline unloaded: TTFT {reference.ttft_ms:.0f} ms, "
                         f"E2E {reference.e2e_ms:.0f} ms); {len(endpoints)} topologies, {config.capacity_deadline:.0f} s in all")
    results: dict[str, CapacityResult] = {}
    for index, (topology, endpoint) in enumerate(endpoints.items()):
        # Rates start at 0.7 / E2E, so a topology's steps last in proportion to its unloaded E2E
        # (beyond the 10 s floor): a slow topology gets that share of what is left.
        pending = [calibrations[t].e2e_ms for t in list(endpoints)[index:]]
        share = (config.capacity_deadline - (time.monotonic() - started)) * pending[0] / sum(pending)

        def progress(step: Step, left: float, topology: str = topology) -> None:
            show(request.config, f"[capacity {topology}] {step.rate:.3g} req/s offered: TTFT p90 {step.ttft_p90.value:.0f} ms "
                                 f"(95% CI {step.ttft_p90.ci_low:.0f} .. {step.ttft_p90.ci_high:.0f}), {step.errors} failed, "
                                 f"goodput {step.goodput:.3g} req/s: {step.outcome}; {max(left, 0):.0f} s left")

        results[topology] = search(topology, endpoint, workloads[topology], slo,
                                   SearchPlan(deadline_s=share, step_requests=config.capacity_step_requests,
                                              min_step_s=config.capacity_step_duration),
                                   calibrations[topology], request_timeout_s=config.request_timeout, on_step=progress)
    threshold = effective_thresholds(request.node, ("capacity_gain",)).get("capacity_gain")
    verdicts = {topology: capacity_gain(result, results[REFERENCE], Rule(">=", threshold))
                for topology, result in results.items() if topology != REFERENCE and threshold is not None}
    for topology, result in results.items():
        data = {**result.as_dict(), "reference": REFERENCE,
                "verdicts": [verdicts[topology].as_dict()] if topology in verdicts else []}
        mooncake_record(Kind.CAPACITY, topology, data)
        show(request.config, f"[capacity] {result.summary()}")
    for topology, reason in unavailable.items():
        show(request.config, f"[capacity] {topology}: not measured ({reason})")
    for verdict in verdicts.values():
        show(request.config, f"[capacity] {verdict.message}")
    show(request.config, f"[capacity] search took {time.monotonic() - started:.0f} s")
    failed = [v.message for v in verdicts.values() if v.outcome is not Outcome.PASSED]
    if failed:
        pytest.fail("\n".join(failed), pytrace=False)

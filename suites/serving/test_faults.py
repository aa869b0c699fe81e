"""Faults in the serving path: a store node dies during a hit round, the master restarts between rounds.

A private cluster (master, two KV store nodes) and one vLLM with ``MooncakeStoreConnector``,
spawned for this module only. Whatever the store loses, every request must still complete
within the request timeout with the answer of the cold round (vLLM recomputes what it cannot
load), and the run counts how many hits were lost.

After each fault the deployment must recover, timed from the faulted round's last answer (the
fault's traffic is over): vLLM's gauges of work in flight come back to their idle pre-fault level
(a request left counted, or KV blocks never freed, is a leak), and a fresh prompt sent again is
served from Mooncake once more.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import pytest

from pytest_mooncake import (
    Concurrency,
    Deployment,
    Kind,
    MasterHandle,
    MasterMetrics,
    MooncakeConfig,
    Record,
    RequestRecord,
    RequestSpec,
    Round,
    StoreNode,
    factories,
    run_requests,
    show,
)
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.serving.gauges import TOLERANCE, Recovery, absent, gauge_reader, wait_until_back

pytestmark = [pytest.mark.destructive, pytest.mark.requires_serving]

fault_master = factories.mooncake_master_proc()
fault_pool = factories.mooncake_kv_pool("fault_master", kv_pool_size="256MiB")
fault_deployment = factories.mooncake_deployment("fault_master", "fault_pool", scope="module", topology="mooncake-store")

PROMPTS, PROMPT_TOKENS = 6, 1500
RECOVERED = re.compile(r"Recovered from KV load failure: (\d+) request\(s\) rescheduled \((\d+) tokens affected\)")
WHOLE_BLOCKS = PROMPT_TOKENS // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
# For the gauges to come back after a fault, and again for a fresh prompt to hit after that.
RECOVERY_TIMEOUT_S = 60.0


def _prompts(tag: str) -> list[RequestSpec]:
    # Token ids of the served tiny model's vocabulary, unique to this run and test.
    rng = random.Random(tag)
    return [RequestSpec(f"{tag}-{i}", "fault", Round.COLD, prompt=tuple(rng.randrange(100, 8000) for _ in range(PROMPT_TOKENS)),
                        max_tokens=8) for i in range(PROMPTS)]


def _send(request: pytest.FixtureRequest, deployment: Deployment, specs: list[RequestSpec]) -> list[RequestRecord]:
    # At temperature 0 with the token ids (Endpoint.prepare): the random-weight model's text may be empty.
    client = deployment.endpoint.client_config(MooncakeConfig.of(request.config).request_timeout)
    return run_requests(client, [deployment.endpoint.prepare(s, 0.0) for s in specs], Concurrency(1))


def _recovered_loads(deployment: Deployment, since: int, until: int | None = None) -> tuple[int, int]:
    """(requests, tokens) vLLM recomputed after a failed KV load, from its log between bytes ``since`` and ``until``.

    vLLM exports no metric for it, and a recovered request still reports the planned hit in
    ``cached_tokens``: only the log tells a loaded hit from a recomputed one."""
    path = deployment.instances[0].log_path
    assert path is not None
    text = path.read_bytes()[since:until].decode(errors="replace")
    found = [(int(n), int(t)) for n, t in RECOVERED.findall(text)]
    return sum(n for n, _ in found), sum(t for _, t in found)


def _log_size(deployment: Deployment) -> int:
    path = deployment.instances[0].log_path
    return path.stat().st_size if path is not None else 0


def _gauges(deployment: Deployment) -> Callable[[], dict[str, float | None]]:
    # The deployment's endpoint is our proxy, which relays /metrics to its one vLLM inside the cluster's namespace.
    endpoint = deployment.endpoint
    return gauge_reader(endpoint.root_url + "/metrics", endpoint.headers())


def _idle_level(deployment: Deployment) -> dict[str, float | None]:
    """The gauges before the fault, once vLLM has no request in flight: the level to come back to."""
    read = _gauges(deployment)
    # A gauge vLLM does not export would read as "back" forever: fail instead of judging without it.
    missing = absent(read())
    assert not missing, f"vLLM exports no {', '.join(missing)} on its /metrics: a leak there could not be seen"
    idle = wait_until_back(read, {"num_requests_running": 0.0, "num_requests_waiting": 0.0}, timeout_s=RECOVERY_TIMEOUT_S)
    assert idle.back, f"vLLM still has requests {idle.waited_s:.0f} s after the last answer, before the fault: {idle.last}"
    return idle.last


def _later_hit(request: pytest.FixtureRequest, deployment: Deployment, master: MasterHandle, tag: str,
               since: float) -> dict[str, object]:
    """Send one fresh prompt until Mooncake serves it whole; seconds from ``since`` to that answer.

    The first send stores the prompt's KV, if the store takes writes again; a later one must load
    it. A load that failed and was recomputed still reports the hit in ``cached_tokens``, so the
    log must show no recovered load during that send (as in ``_judge``)."""
    spec = _prompts(tag)[0]
    deadline, sends = time.monotonic() + RECOVERY_TIMEOUT_S, 0
    while True:
        log_start = _log_size(deployment)
        [answer] = _send(request, deployment, [spec])
        sends += 1
        loaded = _recovered_loads(deployment, log_start) == (0, 0)
        if answer.error is None and (answer.cached_tokens or 0) >= WHOLE_BLOCKS and loaded:
            return {"later_hit_s": time.monotonic() - since, "later_hit_cached_tokens": answer.cached_tokens,
                    "later_hit_sends": sends}
        if time.monotonic() >= deadline:
            return {"later_hit_s": None, "later_hit_cached_tokens": answer.cached_tokens, "later_hit_sends": sends,
                    "later_hit_waited_s": time.monotonic() - since, "later_hit_error": str(answer.error or "")}
        MasterMetrics(master).settled()  # the connector's background save of this send lands first


def _recover(request: pytest.FixtureRequest, deployment: Deployment, master: MasterHandle, level: dict[str, float | None],
             fault_end: float, tag: str) -> dict[str, object]:
    """How the deployment recovers, in seconds from ``fault_end`` (a ``time.monotonic()`` reading): the
    gauges back within ``TOLERANCE`` of their idle ``level`` (polled: vLLM may still be freeing), then the
    first later hit. Gauges go up and down, so they are compared, never run through ``deltas``."""
    gauges: Recovery = wait_until_back(_gauges(deployment), level, since=fault_end, timeout_s=RECOVERY_TIMEOUT_S)
    return {"gauges_back": gauges.back, "gauges_back_s": gauges.waited_s, "gauges_before": gauges.before,
            "gauges_after": gauges.last, "gauges_told": gauges.describe(), "gauge_tolerance": TOLERANCE,
            **_later_hit(request, deployment, master, tag, fault_end)}


def _judge(request: pytest.FixtureRequest, name: str, deployment: Deployment, log: tuple[int, int], cold: list[RequestRecord],
           hit: list[RequestRecord], recovery: dict[str, object], record: Record) -> dict[str, object]:
    errors = [str(r.error) for r in hit if r.error is not None]
    timeout = MooncakeConfig.of(request.config).request_timeout
    missed = sum((r.cached_tokens or 0) < WHOLE_BLOCKS for r in hit)
    recomputed, tokens = _recovered_loads(deployment, *log)
    # A request whose load failed may fail again on its retry, so load failures count events, not requests.
    summary = {"requests": len(hit), "errors": errors, "lookups_missed": missed, "load_failures_recomputed": recomputed,
               "recomputed_tokens": tokens,
               "cached_tokens": [r.cached_tokens for r in hit], "slowest_e2e_s": max((r.e2e_s or 0) for r in hit),
               "recovery": recovery}
    record(Kind.SERVING_FAULT, name, summary)
    show(request.config, f"[fault {name}] {len(hit) - len(errors)}/{len(hit)} requests completed with the cold answer; "
         f"hits lost: {missed} of {len(hit)} lookups found nothing stored, {recomputed} loads failed and were recomputed "
         f"({tokens} tokens; vLLM's log); slowest {summary['slowest_e2e_s']:.2f} s")
    hit_s = recovery["later_hit_s"]
    show(request.config, f"[fault {name}] recovery, from the faulted round's last answer: gauges "
         f"{'back' if recovery['gauges_back'] else 'NOT back'} after {recovery['gauges_back_s']:.1f} s "
         f"({recovery['gauges_told']}); first later hit "
         + (f"after {hit_s:.1f} s ({recovery['later_hit_cached_tokens']} cached tokens, send {recovery['later_hit_sends']} "
            "of a fresh prompt)" if isinstance(hit_s, float) else f"NONE in {recovery['later_hit_sends']} sends"))
    assert not errors and all(r.error is None for r in cold), f"requests failed under the fault: {errors}"
    assert all(r.token_ids for r in cold), "the cold answers carry no token ids (return_token_ids)"
    assert [r.token_ids for r in hit] == [r.token_ids for r in cold], "an answer after the fault differs from the cold answer"
    assert summary["slowest_e2e_s"] < timeout
    assert recovery["gauges_back"], \
        (f"vLLM's gauges did not come back to their pre-fault level (tolerance {TOLERANCE}) within "
         f"{recovery['gauges_back_s']:.0f} s of the faulted round: pre-fault -> last seen: {recovery['gauges_told']}")
    assert hit_s is not None, \
        (f"no later prompt was served from Mooncake within {RECOVERY_TIMEOUT_S:g} s after the gauges "
         f"({recovery['later_hit_sends']} sends of one fresh prompt, {recovery['later_hit_waited_s']:.0f} s after the "
         f"faulted round; last cached_tokens {recovery['later_hit_cached_tokens']}, "
         f"error {recovery['later_hit_error'] or 'none'}): the store did not recover")
    return summary


def test_a_store_node_killed_during_the_hit_round(request: pytest.FixtureRequest, fault_deployment: Deployment,
                                                  fault_master: MasterHandle, fault_pool: list[StoreNode],
                                                  mooncake_record: Record, mooncake_run_id: str) -> None:
    specs = _prompts(f"{mooncake_run_id} node kill")
    cold = _send(request, fault_deployment, specs)
    MasterMetrics(fault_master).settled()  # the connector's background saves stop adding keys
    level = _idle_level(fault_deployment)
    log_start = _log_size(fault_deployment)
    first = _send(request, fault_deployment, specs[:2])
    fault_pool[0].kill()
    rest = _send(request, fault_deployment, specs[2:])
    hit = first + rest
    fault_end, log_end = time.monotonic(), _log_size(fault_deployment)
    recovery = _recover(request, fault_deployment, fault_master, level, fault_end, f"{mooncake_run_id} after node kill")
    assert all((r.cached_tokens or 0) >= WHOLE_BLOCKS for r in first), \
        f"before the kill every prompt must hit: {[r.cached_tokens for r in first]}"
    summary = _judge(request, "store-node-killed", fault_deployment, (log_start, log_end), cold, hit, recovery,
                     mooncake_record)
    assert summary["lookups_missed"] or summary["load_failures_recomputed"], \
        f"no hit was lost, so the killed node held none of the KV the round read: the fault was not tested: {summary}"


def test_the_master_restarted_between_rounds(request: pytest.FixtureRequest, fault_deployment: Deployment,
                                             fault_master: MasterHandle, mooncake_record: Record,
                                             mooncake_run_id: str) -> None:
    specs = _prompts(f"{mooncake_run_id} master restart")
    cold = _send(request, fault_deployment, specs)
    MasterMetrics(fault_master).settled()  # the connector's background saves stop adding keys
    level = _idle_level(fault_deployment)
    log_start = _log_size(fault_deployment)
    fault_master.restart()
    hit = _send(request, fault_deployment, specs)
    fault_end, log_end = time.monotonic(), _log_size(fault_deployment)
    recovery = _recover(request, fault_deployment, fault_master, level, fault_end, f"{mooncake_run_id} after master restart")
    summary = _judge(request, "master-restarted", fault_deployment, (log_start, log_end), cold, hit, recovery,
                     mooncake_record)
    assert summary["lookups_missed"] == PROMPTS, f"a non-HA master restart forgets every key, yet some hit: {summary}"

"""Faults in the serving path: a store node dies during a hit round, the master restarts between rounds.

A private cluster (master, two KV store nodes) and one vLLM with ``MooncakeStoreConnector``,
spawned for this module only. Whatever the store loses, every request must still complete
within the request timeout with the answer of the cold round (vLLM recomputes what it cannot
load), and the run counts how many hits were lost.
"""

from __future__ import annotations

import random
import re

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

pytestmark = [pytest.mark.destructive, pytest.mark.requires_serving]

fault_master = factories.mooncake_master_proc()
fault_pool = factories.mooncake_kv_pool("fault_master", kv_pool_size="256MiB")
fault_deployment = factories.mooncake_deployment("fault_master", "fault_pool", scope="module", topology="mooncake-store")

PROMPTS, PROMPT_TOKENS = 6, 1500
RECOVERED = re.compile(r"Recovered from KV load failure: (\d+) request\(s\) rescheduled \((\d+) tokens affected\)")
WHOLE_BLOCKS = PROMPT_TOKENS // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS


def _prompts(tag: str) -> list[RequestSpec]:
    # Token ids of the served tiny model's vocabulary, unique to this run and test.
    rng = random.Random(tag)
    return [RequestSpec(f"{tag}-{i}", "fault", Round.COLD, prompt=tuple(rng.randrange(100, 8000) for _ in range(PROMPT_TOKENS)),
                        max_tokens=8) for i in range(PROMPTS)]


def _send(request: pytest.FixtureRequest, deployment: Deployment, specs: list[RequestSpec]) -> list[RequestRecord]:
    # At temperature 0 with the token ids (Endpoint.prepare): the random-weight model's text may be empty.
    client = deployment.endpoint.client_config(MooncakeConfig.of(request.config).request_timeout)
    return run_requests(client, [deployment.endpoint.prepare(s, 0.0) for s in specs], Concurrency(1))


def _recovered_loads(deployment: Deployment, since: int) -> tuple[int, int]:
    """(requests, tokens) vLLM recomputed after a failed KV load, from its log after byte ``since``.

    vLLM exports no metric for it, and a recovered request still reports the planned hit in
    ``cached_tokens``: only the log tells a loaded hit from a recomputed one."""
    path = deployment.instances[0].log_path
    assert path is not None
    text = path.read_bytes()[since:].decode(errors="replace")
    found = [(int(n), int(t)) for n, t in RECOVERED.findall(text)]
    return sum(n for n, _ in found), sum(t for _, t in found)


def _log_size(deployment: Deployment) -> int:
    path = deployment.instances[0].log_path
    return path.stat().st_size if path is not None else 0


def _judge(request: pytest.FixtureRequest, name: str, deployment: Deployment, log_start: int, cold: list[RequestRecord],
           hit: list[RequestRecord], record: Record) -> dict[str, object]:
    errors = [str(r.error) for r in hit if r.error is not None]
    timeout = MooncakeConfig.of(request.config).request_timeout
    missed = sum((r.cached_tokens or 0) < WHOLE_BLOCKS for r in hit)
    recomputed, tokens = _recovered_loads(deployment, log_start)
    # A request whose load failed may fail again on its retry, so load failures count events, not requests.
    summary = {"requests": len(hit), "errors": errors, "lookups_missed": missed, "load_failures_recomputed": recomputed,
               "recomputed_tokens": tokens,
               "cached_tokens": [r.cached_tokens for r in hit], "slowest_e2e_s": max((r.e2e_s or 0) for r in hit)}
    record(Kind.SERVING_FAULT, name, summary)
    show(request.config, f"[fault {name}] {len(hit) - len(errors)}/{len(hit)} requests completed with the cold answer; "
         f"hits lost: {missed} of {len(hit)} lookups found nothing stored, {recomputed} loads failed and were recomputed "
         f"({tokens} tokens; vLLM's log); slowest {summary['slowest_e2e_s']:.2f} s")
    assert not errors and all(r.error is None for r in cold), f"requests failed under the fault: {errors}"
    assert all(r.token_ids for r in cold), "the cold answers carry no token ids (return_token_ids)"
    assert [r.token_ids for r in hit] == [r.token_ids for r in cold], "an answer after the fault differs from the cold answer"
    assert summary["slowest_e2e_s"] < timeout
    return summary


def test_a_store_node_killed_during_the_hit_round(request: pytest.FixtureRequest, fault_deployment: Deployment,
                                                  fault_master: MasterHandle, fault_pool: list[StoreNode],
                                                  mooncake_record: Record, mooncake_run_id: str) -> None:
    specs = _prompts(f"{mooncake_run_id} node kill")
    cold = _send(request, fault_deployment, specs)
    MasterMetrics(fault_master).settled()  # the connector's background saves stop adding keys
    log_start = _log_size(fault_deployment)
    first = _send(request, fault_deployment, specs[:2])
    fault_pool[0].kill()
    rest = _send(request, fault_deployment, specs[2:])
    hit = first + rest
    assert all((r.cached_tokens or 0) >= WHOLE_BLOCKS for r in first), \
        f"before the kill every prompt must hit: {[r.cached_tokens for r in first]}"
    summary = _judge(request, "store-node-killed", fault_deployment, log_start, cold, hit, mooncake_record)
    assert summary["lookups_missed"] or summary["load_failures_recomputed"], \
        f"no hit was lost, so the killed node held none of the KV the round read: the fault was not tested: {summary}"


def test_the_master_restarted_between_rounds(request: pytest.FixtureRequest, fault_deployment: Deployment,
                                             fault_master: MasterHandle, mooncake_record: Record,
                                             mooncake_run_id: str) -> None:
    specs = _prompts(f"{mooncake_run_id} master restart")
    cold = _send(request, fault_deployment, specs)
    MasterMetrics(fault_master).settled()  # the connector's background saves stop adding keys
    log_start = _log_size(fault_deployment)
    fault_master.restart()
    hit = _send(request, fault_deployment, specs)
    summary = _judge(request, "master-restarted", fault_deployment, log_start, cold, hit, mooncake_record)
    assert summary["lookups_missed"] == PROMPTS, f"a non-HA master restart forgets every key, yet some hit: {summary}"

"""The positive control of the output-integrity check: corrupted KV in the store must be caught.

Every serving scenario ends with an exact repeat of a cold prompt, and ``qualify.reuse.evaluate``
fails it when the cache-hit answer's token ids differ from the cold answer's ("output
integrity"). A check that has never failed proves nothing: here the KV one prompt stored is
overwritten in the store (same keys, same sizes, random bytes), the prompt is sent again, and the
same check must report the difference. If vLLM or the connector notices the corruption itself
(a failed request, a recompute, a log line), that is reported and passes too; a hit that silently
returns the cold answer from corrupted KV fails, since then the comparison could not tell.

Random bytes, not zeros: the spawned random-weight model's greedy answer depends on the prompt's
recomputed tail only (measured: the prefix of one prompt with the tail of another answers the
other's tokens), so zeroed KV, or another prompt's, leaves its answer unchanged and no answer
comparison can see it. Random float32 bits (huge values, NaN) do reach the answer.

It overwrites store data, so it runs only on a Mooncake topology pytest spawned, whose instances
have no local prefix cache (every hit is read from the store).
"""

from __future__ import annotations

import random
import re
import time

import pytest

from pytest_mooncake import (
    Concurrency,
    Deployment,
    Endpoint,
    Kind,
    MasterHandle,
    MasterMetrics,
    MooncakeConfig,
    Record,
    RequestRecord,
    RequestSpec,
    Round,
    Scenario,
    StoreClient,
    run_requests,
    show,
)
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.qualify.protocol import RoundResult, ScenarioRun
from pytest_mooncake.qualify.reuse import evaluate

pytestmark = [pytest.mark.destructive, pytest.mark.requires_serving]

PROMPT_TOKENS = 1500
WHOLE_BLOCKS = PROMPT_TOKENS // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
# What vLLM 0.32 logs when a KV load fails (the connector) and the request is failed or recomputed (the scheduler).
LOAD_FAILURE = re.compile(r"Failed to get (\d+ )?Mooncake (keys|sub-batch)|KV load failure")
# Same-size random bytes (see the module docstring for why not zeros), seeded: a rerun writes the same.
PATTERN, SEED = "random", 22


def _spawned_store_hits(deployment: Deployment) -> Endpoint:
    """The endpoint whose hits read the store; skips anything else: this test destroys stored KV."""
    if not deployment.topology.mooncake or deployment.master is None or not deployment.master.spawned:
        pytest.skip(f"overwrites stored KV, so it needs a Mooncake topology pytest spawned "
                    f"(--mooncake-topology=mooncake-store); this run measures {deployment.topology.name}")
    # The endpoints may be forwarders into the namespace: the vLLM instances know their flags.
    if any(instance.prefix_caching is not False for instance in deployment.instances):
        pytest.skip(f"topology {deployment.topology.name} keeps vLLM's own prefix cache, which would answer the "
                    f"repeat instead of the corrupted store; run --mooncake-topology=mooncake-store")
    return deployment.reader or deployment.endpoint


def _send(endpoint: Endpoint, spec: RequestSpec, config: MooncakeConfig) -> RequestRecord:
    # At temperature 0 with the token ids (Endpoint.prepare): the random-weight model's text may be empty.
    [record] = run_requests(endpoint.client_config(config.request_timeout), [endpoint.prepare(spec, 0.0)], Concurrency(1))
    return record


def _answered(record: RequestRecord) -> RequestRecord:
    assert record.error is None and record.token_ids, f"{record.request_id}: no token ids ({record.error})"
    return record


def _keys(master: MasterHandle) -> set[str]:
    """Every key the master holds, once the connector's background saves have stopped adding any."""
    MasterMetrics(master).settled()
    response = master.admin("/get_all_keys")
    assert response.status == 200, f"{master.metrics_url}/get_all_keys answered {response.status}: {response.body[:200]}"
    return set(response.body.split())


def _log_lines(deployment: Deployment, since: dict[str, int]) -> list[str]:
    """What the instances logged about failed KV loads after the byte offsets ``since``."""
    lines = []
    for instance in deployment.instances:
        if instance.log_path is not None:
            text = instance.log_path.read_bytes()[since.get(instance.label, 0):].decode(errors="replace")
            lines += [line.strip() for line in text.splitlines() if LOAD_FAILURE.search(line)]
    return lines


def _log_sizes(deployment: Deployment) -> dict[str, int]:
    return {i.label: i.log_path.stat().st_size for i in deployment.instances if i.log_path is not None}


def _integrity_problems(deployment: Deployment, cold: RequestRecord, hit: RequestRecord) -> list[str]:
    """The serving suites' output-integrity check on (cold, cache hit), as ``evaluate`` runs it."""
    scenario = Scenario("corrupted_kv", 1, WHOLE_BLOCKS, PROMPT_TOKENS - WHOLE_BLOCKS, reuse=1.0)
    rounds = [RoundResult(Round.COLD, [cold], cold.e2e_s or 0.0), RoundResult(Round.HIT, [hit], hit.e2e_s or 0.0)]
    run = ScenarioRun(scenario, deployment.endpoint, rounds, cache_reset=False, settled=True, integrity=(cold, hit))
    return [p for p in evaluate(run, {}).problems if p.startswith("output integrity")]


def test_the_integrity_check_catches_corrupted_kv(request: pytest.FixtureRequest, mooncake_deployment: Deployment,
                                                  mooncake_config: MooncakeConfig, mooncake_run_id: str,
                                                  mooncake_record: Record, mooncake_store: StoreClient) -> None:
    hits = _spawned_store_hits(mooncake_deployment)
    master = mooncake_deployment.master
    assert master is not None
    started = time.monotonic()
    rng = random.Random(f"{mooncake_run_id} corrupted kv")
    spec = RequestSpec(f"{mooncake_run_id}-corrupted-kv", "corruption", "probe", max_tokens=8,
                       prompt=tuple(rng.randrange(100, 8000) for _ in range(PROMPT_TOKENS)))

    # Only the keys this salted prompt stored are touched: the difference of the key sets around it.
    before = _keys(master)
    cold = _answered(_send(mooncake_deployment.endpoint, spec, mooncake_config))
    written = sorted(_keys(master) - before)
    assert len(written) >= WHOLE_BLOCKS // KV_BLOCK_TOKENS, \
        f"the cold request stored {len(written)} keys; its {WHOLE_BLOCKS // KV_BLOCK_TOKENS} whole blocks predict more"

    # Uncorrupted, the repeat is a store hit with the cold answer: any later difference is the corruption's.
    clean = _answered(_send(hits, spec, mooncake_config))
    assert (clean.cached_tokens or 0) >= WHOLE_BLOCKS and clean.token_ids == cold.token_ids, \
        f"before any corruption the repeat must hit the store with the cold answer: {clean.cached_tokens} cached " \
        f"tokens, {clean.token_ids} vs {cold.token_ids}"

    overwritten = mooncake_store.call("overwrite", written, PATTERN, SEED)
    assert all(o["code"] == 0 and o["size_after"] == o["size"] > 0 and o["exact"] for o in overwritten), \
        f"the store did not take the same-size {PATTERN} bytes: {overwritten}"
    since = _log_sizes(mooncake_deployment)
    hit = _send(hits, spec, mooncake_config)
    logged = _log_lines(mooncake_deployment, since)

    outcome = {"pattern": PATTERN, "keys_stored": len(written), "keys_overwritten": len(overwritten), "bytes_overwritten":
               sum(o["size"] for o in overwritten), "clean_cached_tokens": clean.cached_tokens,
               "hit_cached_tokens": hit.cached_tokens, "cold_token_ids": list(cold.token_ids or ()),
               "hit_token_ids": list(hit.token_ids or ()), "hit_error": str(hit.error) if hit.error else None,
               "load_failures_logged": logged[:5]}
    # vLLM or the connector noticed by itself: the corrupted KV never reached an answer.
    if hit.error is not None or not hit.cached_tokens or logged:
        outcome.update(detected_by="server", caught_by_integrity_check=None, seconds=time.monotonic() - started)
        mooncake_record(Kind.TOPOLOGY, "corrupted-kv", outcome)
        show(request.config, f"[corrupted kv] {len(written)} keys overwritten with {PATTERN} bytes; the server detected it: "
             f"error {outcome['hit_error']}, {hit.cached_tokens} cached tokens, log {logged[:3]}")
        return

    problems = _integrity_problems(mooncake_deployment, cold, hit)
    outcome.update(detected_by="integrity check" if problems else None, caught_by_integrity_check=bool(problems),
                   problem=problems[0] if problems else None, seconds=time.monotonic() - started)
    mooncake_record(Kind.TOPOLOGY, "corrupted-kv", outcome)
    show(request.config, f"[corrupted kv] {len(written)} keys ({outcome['bytes_overwritten']} B) overwritten with {PATTERN} bytes; "
         f"the repeat had {hit.cached_tokens} cached tokens from the store; the integrity check "
         + (f"caught it:\n{problems[0]}" if problems else f"did NOT: same token ids {list(hit.token_ids or ())}"))
    assert problems, f"a store hit on corrupted KV returned the cold answer and no check noticed: the output-integrity " \
        f"check has no demonstrated power here: {outcome}"

"""Properties of the serving topology itself, beside the scenario verdicts.

- The KV lives in store nodes, not in a vLLM instance: what a ``standalone-store`` instance
  stored outlives it and another instance reuses it, while an ``embedded`` instance's KV dies
  with it (spawned Mooncake topologies; each writer is a vLLM of its own).
- The prefill/decode proxy answers exactly what one instance answers (``pd-store``).

Answers are compared by the token ids vLLM returns, never by text: the random-weight model's
tokens may decode to no text at all.
"""

from __future__ import annotations

import json
import random
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
    Spawner,
    run_requests,
    show,
)
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS

pytestmark = pytest.mark.requires_serving

PROMPT_TOKENS = 1500
WHOLE_BLOCKS = PROMPT_TOKENS // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
EMBEDDED_SEGMENT = 256 * 2**20
# The master checks client liveness every second (kClientMonitorSleepMs); one more for the unmount.
CLIENT_MONITOR_S = 2.0


def _prompt(tag: str) -> RequestSpec:
    rng = random.Random(tag)
    return RequestSpec(tag, "topology", "probe", prompt=tuple(rng.randrange(100, 8000) for _ in range(PROMPT_TOKENS)),
                       max_tokens=8)


def _ask(endpoint: Endpoint, spec: RequestSpec, config: MooncakeConfig) -> RequestRecord:
    """``spec``'s answer at temperature 0, with its token ids (``Endpoint.prepare``: a spawned model is random)."""
    [record] = run_requests(endpoint.client_config(config.request_timeout), [endpoint.prepare(spec, 0.0)], Concurrency(1))
    assert record.error is None, f"{endpoint.label}: {record.error}"
    assert record.token_ids, f"{endpoint.label} returned no token ids for {spec.request_id!r} (return_token_ids)"
    return record


def _settled_keys(metrics: MasterMetrics) -> float:
    """master_key_count once it has stopped changing (saves and unmounts are asynchronous)."""
    count = metrics.settled().values["master_key_count"]
    assert count is not None, f"{metrics.master.metrics_url}/metrics has no master_key_count"
    return count


def _spawned_mooncake(deployment: Deployment) -> None:
    if not deployment.topology.mooncake or deployment.master is None or not deployment.master.spawned:
        pytest.skip(f"needs a spawned Mooncake topology (--mooncake-topology=mooncake-store, ...); this run measures "
                    f"{deployment.topology.name}")


def _write_and_stop(spawn: Spawner, master: MasterHandle, config: MooncakeConfig, spec: RequestSpec,
                    segment: int) -> tuple[RequestRecord, float, float]:
    """A writer instance answers ``spec`` (storing its KV) and exits: (answer, keys it stored, keys left after)."""
    metrics = MasterMetrics(master)
    before = _settled_keys(metrics)
    with spawn.deployment("mooncake-store", master, embedded_segment=segment) as writer:
        answer = _ask(writer.endpoint, spec, config)
        stored = _settled_keys(metrics) - before
    # The master drops an exited client's segment (and the keys on it) once client_ttl has passed.
    time.sleep(master.client_ttl + CLIENT_MONITOR_S)
    return answer, stored, _settled_keys(metrics) - before


def test_stored_kv_outlives_the_instance_that_wrote_it(request: pytest.FixtureRequest, mooncake_deployment: Deployment,
                                                       mooncake_config: MooncakeConfig, mooncake_run_id: str,
                                                       mooncake_record: Record, mooncake_spawn: Spawner) -> None:
    """A standalone-store writer (no memory of its own) stores into the store nodes; it exits and the
    topology's instance reuses its KV. An embedded writer on a master whose only segment is its own
    takes its KV with it (with store nodes beside it, the master may place its keys on them)."""
    _spawned_mooncake(mooncake_deployment)
    master = mooncake_deployment.master
    assert master is not None
    spec = _prompt(f"{mooncake_run_id} outlives standalone")
    cold, stored, kept = _write_and_stop(mooncake_spawn, master, mooncake_config, spec, 0)
    hit = _ask(mooncake_deployment.reader or mooncake_deployment.endpoint, spec, mooncake_config)
    with mooncake_spawn.master() as private:
        _, embedded_stored, embedded_kept = _write_and_stop(
            mooncake_spawn, private, mooncake_config, _prompt(f"{mooncake_run_id} outlives embedded"), EMBEDDED_SEGMENT)
    outcome = {"standalone_stored_keys": stored, "standalone_keys_after_exit": kept,
               "reader_cached_tokens": hit.cached_tokens or 0, "reader_same_answer": hit.token_ids == cold.token_ids,
               "embedded_stored_keys": embedded_stored, "embedded_keys_after_exit": embedded_kept}
    mooncake_record(Kind.TOPOLOGY, "kv-outlives-writer", outcome)
    show(request.config, f"[kv outlives writer] standalone-store writer stored {stored:+g} keys, {kept:+g} left after it "
         f"exited, the reader then had {outcome['reader_cached_tokens']} cached tokens; an embedded writer stored "
         f"{embedded_stored:+g} keys in its own segment, {embedded_kept:+g} left after it exited")
    assert stored >= WHOLE_BLOCKS // KV_BLOCK_TOKENS, f"the writer stored too little: {outcome}"
    assert kept == stored, f"keys vanished with a standalone-store writer: {outcome}"
    assert outcome["reader_cached_tokens"] >= WHOLE_BLOCKS and outcome["reader_same_answer"], \
        f"the reader did not reuse what the stopped writer stored: {outcome}"
    assert embedded_stored > 0 and embedded_kept == 0, f"an embedded writer's keys must vanish with it: {outcome}"


def test_pd_proxy_answers_like_one_instance(mooncake_deployment: Deployment, mooncake_config: MooncakeConfig,
                                            mooncake_run_id: str) -> None:
    if mooncake_deployment.topology.name != "pd-store" or not mooncake_deployment.instances:
        pytest.skip(f"checks the spawned pd-store proxy; this run measures {mooncake_deployment.topology.name}")
    prefiller = mooncake_deployment.instances[0]
    master = mooncake_deployment.master
    spec = _prompt(f"{mooncake_run_id} pd proxy")
    through_proxy = _ask(mooncake_deployment.endpoint, spec, mooncake_config)
    payload = {"model": prefiller.model, "prompt": list(spec.prompt or ()), "max_tokens": 8, "min_tokens": 1,
               "return_token_ids": True, "temperature": 0}
    direct = prefiller.post("/completions", payload, timeout=mooncake_config.request_timeout,
                            netns=master.netns if master else None)
    assert direct.status == 200, direct.body[:500]
    direct_ids = tuple(json.loads(direct.body)["choices"][0]["token_ids"])
    assert through_proxy.token_ids == direct_ids, f"the PD proxy's answer {through_proxy.token_ids} differs from one " \
        f"instance's {direct_ids}"
    wrong = mooncake_deployment.endpoint.post("/completions", {"model": "no-such-model", "prompt": [1, 2, 3], "max_tokens": 1},
                                              timeout=30)
    assert wrong.status == 404 and "no-such-model" in wrong.body, f"the proxy must pass vLLM's error through: {wrong}"

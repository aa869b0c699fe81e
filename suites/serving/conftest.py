"""Fixtures of the serving suites: the token pool, the scenarios and the protocol runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_mooncake import Deployment, Endpoint, MooncakeConfig, Scenario, StoreClient, TokenPool, show
from pytest_mooncake.endpoints.tokens import Tokenize, tokenizer_for
from pytest_mooncake.endpoints.topology import KV_BLOCK_TOKENS
from pytest_mooncake.qualify.capacity import MODELS
from pytest_mooncake.qualify.kv_budget import KVBudget, attached_budget
from pytest_mooncake.qualify.protocol import ReuseProtocol, store_counters
from pytest_mooncake.qualify.reuse import Explain
from pytest_mooncake.qualify.scenarios import apply_definition, default_scenarios, user_scenario


@pytest.fixture(scope="session")
def serving_tokenizer(openai_endpoint: Endpoint, mooncake_config: MooncakeConfig) -> Tokenize:
    """The served model's tokenizer: ``--mooncake-tokenizer``, else the endpoint's /tokenize."""
    return tokenizer_for(openai_endpoint, mooncake_config.tokenizer)


@pytest.fixture(scope="session")
def serving_scenarios(openai_endpoint: Endpoint, mooncake_config: MooncakeConfig, serving_tokenizer: Tokenize) -> dict[str, Scenario]:
    """Default scenarios sized to the server, then the settings and the YAML definitions on top."""
    overrides: dict[str, object] = {}
    if mooncake_config.sources["requests_per_scenario"] != "default":
        overrides["num_requests"] = mooncake_config.requests_per_scenario
    if mooncake_config.sources["max_tokens"] != "default":
        overrides["max_tokens"] = mooncake_config.max_tokens
    scenarios = {name: apply_definition(s, overrides) for name, s in default_scenarios(openai_endpoint.max_model_len()).items()}
    for name, definition in mooncake_config.scenario_definitions.items():
        base = scenarios[name] if name in scenarios else user_scenario(name, overrides)
        scenarios[name] = apply_definition(base, definition, serving_tokenizer)
    return scenarios


@pytest.fixture(scope="session")
def token_pool(serving_tokenizer: Tokenize, serving_scenarios: dict[str, Scenario]) -> TokenPool:
    longest = max(s.prompt_tokens + s.turns * s.question_tokens for s in serving_scenarios.values())
    return TokenPool.from_tokenizer(serving_tokenizer, min_tokens=longest + 64 * 1024)


@pytest.fixture(scope="session")
def serving_budget(request: pytest.FixtureRequest, mooncake_deployment: Deployment, mooncake_config: MooncakeConfig,
                   mooncake_run_id: str) -> Iterator[KVBudget | None]:
    """On a Mooncake topology whose KV goes into an attached pool: what each test may leave there."""
    budget = attached_budget(mooncake_deployment, mooncake_config, mooncake_run_id, lambda line: show(request.config, line))
    yield budget
    if budget is not None:
        show(request.config, budget.summary())


@pytest.fixture(scope="session")
def serving_protocol(
    request: pytest.FixtureRequest, mooncake_deployment: Deployment, token_pool: TokenPool,
    mooncake_config: MooncakeConfig, mooncake_run_id: str, serving_budget: KVBudget | None
) -> ReuseProtocol:
    return ReuseProtocol(mooncake_deployment.endpoint, token_pool, mooncake_config, mooncake_run_id,
                    hit_endpoint=mooncake_deployment.reader, topology=mooncake_deployment.topology,
                    store_counters=store_counters(mooncake_deployment), progress=request.config,
                    budget=serving_budget.scenario if serving_budget else None)


@pytest.fixture(scope="session")
def serving_explain(request: pytest.FixtureRequest, mooncake_deployment: Deployment, mooncake_run_id: str) -> Explain | str | None:
    """The model shape and the store's read bandwidth at KV-block size on the connectors' path
    (batch_get_into into a registered buffer), measured now, for the design's prediction of a
    Mooncake hit's TTFT; on an attached endpoint, why there is none; None off Mooncake."""
    if not mooncake_deployment.topology.mooncake:
        return None  # the hits are a local prefix cache's: the design's arithmetic is about Mooncake's
    if mooncake_deployment.master is None or not mooncake_deployment.instances:
        return ("attach mode: the design's arithmetic needs the served model's shape (layers, hidden size, KV heads: "
                "the FLOPs of the uncached tail and the KV bytes of the cached part), which an endpoint we did not "
                "start does not tell, and the store's read bandwidth at that model's KV-block size, which only writes "
                "of ours into the attached pool could measure")
    store: StoreClient = request.getfixturevalue("mooncake_store")
    shape = MODELS["ci-tiny-llama"]
    block = shape.kv_bytes(KV_BLOCK_TOKENS)
    measured = store.call("zero_copy_throughput", f"{mooncake_run_id}-explain", block, 16, 1, 1.0)
    return Explain(shape, measured["get_gbps"] * 1e9)

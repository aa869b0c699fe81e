"""Fixtures of the serving suites: the token pool, the scenarios and the protocol runner."""

from __future__ import annotations

import pytest

from pytest_mooncake import MasterMetrics
from pytest_mooncake.options import MooncakeConfig
from pytest_mooncake.protocol import Counters, Protocol
from pytest_mooncake.scenarios import Scenario, apply_definition, default_scenarios, user_scenario
from pytest_mooncake.vllm.server import Endpoint
from pytest_mooncake.vllm.tokens import Tokenize, TokenPool, tokenizer_for


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


def _store_counters(request: pytest.FixtureRequest, config: MooncakeConfig) -> Counters | None:
    """The attached Mooncake master's key count and bytes: proof that a connector stored KV there."""
    if not config.attach:
        return None
    metrics = MasterMetrics(request.getfixturevalue("mooncake_master"))

    def read() -> dict[str, float | None]:
        snapshot = metrics.snapshot()
        return {name: snapshot.get(name) for name in ("master_key_count", "master_allocated_bytes")}

    return read


@pytest.fixture(scope="session")
def serving_protocol(
    request: pytest.FixtureRequest, openai_endpoint: Endpoint, token_pool: TokenPool, mooncake_config: MooncakeConfig, mooncake_run_id: str
) -> Protocol:
    return Protocol(openai_endpoint, token_pool, mooncake_config, mooncake_run_id,
                    store_counters=_store_counters(request, mooncake_config), progress=request.config)

"""Scenarios from the guides' YAML: overrides, user-defined scenarios, templates, exact prompt lengths."""

from __future__ import annotations

import re
import zlib

import pytest

from pytest_mooncake.endpoints.tokens import TokenPool
from pytest_mooncake.qualify.scenarios import (
    PromptBuilder,
    Scenario,
    apply_definition,
    default_scenarios,
    user_scenario,
)

POOL = TokenPool(tuple(range(1000, 9000)) * 4)


def salt(tag: str) -> list[int]:
    # crc32, not hash(): str hashes change with PYTHONHASHSEED, and a failure must reproduce.
    return [zlib.crc32(tag.encode()) % 997 + 1] * 4


def test_guide_keys_override_a_built_in_scenario() -> None:
    high = default_scenarios(8192)["high_reuse"]
    changed = apply_definition(high, {"num_requests": 50, "reuse_ratio": 0.8, "prompt_template": "x", "rounds": 3})
    assert (changed.requests, changed.reuse, changed.rounds, changed.document_tokens) == (50, 0.8, 3, high.document_tokens)


def test_a_user_scenario_with_its_template_and_exact_lengths() -> None:
    words = {"Summarise": [7, 8], "it.": [9]}
    scenario = user_scenario("rag", {"num_requests": 4, "document_tokens": 500, "question_tokens": 40, "reuse_ratio": 0.5,
                                     "concurrency": 2, "prompt_template": "Summarise it.", "ttft_reduction": 0.5},
                             lambda text: [i for word in text.split() for i in words[word]])
    assert (scenario.requests, scenario.concurrency, scenario.template) == (4, 2, (7, 8, 9))
    builder = PromptBuilder(POOL, salt, scenario)
    cold, hit = builder.cold_round(), builder.hit_round("hit1", variant=1)
    assert all(len(spec.prompt) == 540 for spec in cold + hit)
    assert all(tuple(spec.prompt[500:503]) == (7, 8, 9) for spec in cold + hit)
    # Half of the hit round reuses its cold document with a new question; the rest shares nothing.
    assert [spec.prompt[:500] == cold[i].prompt[:500] for i, spec in enumerate(hit)] == [True, True, False, False]
    assert all(spec.prompt[500:] != cold[i].prompt[500:] for i, spec in enumerate(hit))


@pytest.mark.parametrize(
    ("definition", "words"),
    [({"num_request": 5}, "unknown key 'num_request' (did you mean 'num_requests'?)"),
     ({"reuse_ratio": 1.5}, "expected a number from 0 to 1"),
     ({"num_requests": -1}, "num_requests = -1 (from a scenario definition): expected a whole number >= 1"), ({"question_tokens": 2, "prompt_template": "a b c"}, "3 tokens long")],
)
def test_bad_definitions_say_what_is_wrong(definition: dict[str, object], words: str) -> None:
    with pytest.raises(pytest.UsageError, match=re.escape(words)):
        user_scenario("mine", definition, str.split)  # type: ignore[arg-type]


def test_scenarios_fit_the_server() -> None:
    assert default_scenarios(8192)["long_context"].prompt_tokens <= 8192
    assert isinstance(default_scenarios(200_000)["long_context"], Scenario)

"""Reuse scenarios: how many requests, how long, how much of each prompt can be reused.

Every prompt is a token-id list cut from the server's own tokenizer output, so lengths are
exact in tokens. Each prompt starts with a salt naming the run, scenario, round and
request, so nothing from an earlier run, scenario or round can pre-warm it; "reuse" is
always reuse we arranged inside this run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_mooncake.config.yamlconfig import parse_scenario
from pytest_mooncake.endpoints.tokens import TokenPool
from pytest_mooncake.results.schema import Round
from pytest_mooncake.serving import RequestSpec

__all__ = ["apply_definition", "default_scenarios", "salt_tokens", "user_scenario"]


@dataclass(frozen=True)
class Scenario:
    name: str
    requests: int  # per round
    document_tokens: int  # the part a hit-round request can reuse
    question_tokens: int  # the part that is new in every request
    reuse: float  # share of hit-round requests that reuse a cold-round document
    max_tokens: int = 8
    turns: int = 0  # multi_turn: turns per conversation; document_tokens is the opening history
    rounds: int | None = None  # None: --mooncake-rounds
    concurrency: int | None = None  # None: --mooncake-concurrency
    template: tuple[int, ...] = ()  # token ids every question starts with (the guides' prompt_template)

    @property
    def prompt_tokens(self) -> int:
        return self.document_tokens + self.question_tokens

    @property
    def reuse_ratio(self) -> float:
        """Reusable share of a reusing request's prompt tokens."""
        return self.document_tokens / self.prompt_tokens


def default_scenarios(max_model_len: int) -> dict[str, Scenario]:
    """Sizes that fit the server; long contexts grow to 32k tokens or the server's limit."""
    long_doc = min(32768, max_model_len) - 512
    return {
        "high_reuse": Scenario("high_reuse", 8, 3584, 128, reuse=1.0),
        # Judged on each half's median, weighted by its share: the mean (12 a round: 16.9 .. 42.0%;
        # 24: 19.5 .. 53.2% around 38.9%, with 4 of 24 cold requests stalled 2.5x by the busy
        # host) swung with single stalls; the same 24 give 29.9 .. 43.9% on the weighted medians.
        "medium_reuse": Scenario("medium_reuse", 24, 3584, 128, reuse=0.5),
        # The control's power grows with n: on a busy 2-core host 8 a round left intervals of
        # +-40%, 16 and 24 still -4 .. +18%.
        "low_reuse": Scenario("low_reuse", 32, 0, 3712, reuse=0.0),
        "long_context": Scenario("long_context", 3, long_doc, 128, reuse=1.0),
        "long_context_high_reuse": Scenario("long_context_high_reuse", 4, long_doc, 256, reuse=1.0),
        "multi_turn": Scenario("multi_turn", 3, 2048, 384, reuse=1.0, turns=5),
        "cold_start": Scenario("cold_start", 5, 0, 2048, reuse=0.0),
        # 12 documents of 28 blocks: 3.5x the tiered topology's own 96-block cache. The hit round
        # revisits them in the cold round's order, which an LRU has always just evicted; one at a
        # time, so the order the cache sees is the order sent (the simulator predicts that order).
        "working_set": Scenario("working_set", 12, 3584, 128, reuse=1.0, concurrency=1),
    }


# The YAML keys of a test_scenarios entry (yamlconfig.SCENARIO_KEYS parses them) -> Scenario fields.
DEFINITION_FIELDS = {
    "num_requests": "requests",
    "reuse_ratio": "reuse",
    "max_tokens": "max_tokens",
    "turns": "turns",
    "document_tokens": "document_tokens",
    "question_tokens": "question_tokens",
    "rounds": "rounds",
    "concurrency": "concurrency",
}
# A user scenario starts from these sizes: a 2k-token document reused by every hit request.
USER_DEFAULTS = {"requests": 8, "document_tokens": 2048, "question_tokens": 128, "reuse": 1.0}


def apply_definition(
    scenario: Scenario, definition: Mapping[str, Any], tokenize: Callable[[str], list[int]] | None = None
) -> Scenario:
    """A scenario with the overrides of a ``test_scenarios`` YAML entry (parsed like the YAML
    file's, so a bad value is the same usage error); ``tokenize`` turns its ``prompt_template``
    into the token ids every question starts with. Threshold keywords (``ttft_reduction`` ...)
    are the test's business and pass through."""
    parsed = parse_scenario(scenario.name, definition, "a scenario definition")
    changes: dict[str, Any] = {DEFINITION_FIELDS[key]: value for key, value in parsed.items() if key in DEFINITION_FIELDS}
    template = definition.get("prompt_template")
    if template is not None and tokenize is not None:
        changes["template"] = tuple(tokenize(str(template)))
    updated = dataclasses.replace(scenario, **changes)
    if len(updated.template) > updated.question_tokens:
        raise pytest.UsageError(
            f"test_scenarios.{scenario.name}.prompt_template is {len(updated.template)} tokens long, more than the "
            f"question ({updated.question_tokens} tokens); raise question_tokens or shorten the template"
        )
    return updated


def user_scenario(name: str, definition: Mapping[str, Any], tokenize: Callable[[str], list[int]] | None = None) -> Scenario:
    """A scenario the YAML defines under a name of its own, from ``USER_DEFAULTS`` up."""
    return apply_definition(Scenario(name, **USER_DEFAULTS), definition, tokenize)  # type: ignore[arg-type]


def salt_tokens(pool: TokenPool, tag: str, length: int = 16) -> list[int]:
    """Token ids derived from ``tag`` alone: equal tags give equal salts, different tags differ."""
    digest = hashlib.sha256(tag.encode()).digest()
    return [pool.ids[int.from_bytes(digest[2 * i : 2 * i + 2], "big") % len(pool.ids)] for i in range(length)]


class PromptBuilder:
    """Cuts salted prompts for one scenario out of a token pool."""

    def __init__(self, pool: TokenPool, salt: Callable[[str], list[int]], scenario: Scenario) -> None:
        self.pool = pool
        self.salt = salt
        self.scenario = scenario
        # Documents and questions come from different regions of the pool.
        self._question_base = scenario.document_tokens + 1024

    def document(self, tag: str, index: int) -> list[int]:
        return self.pool.prompt(self.salt(f"{tag} document {index}"), self.scenario.document_tokens, offset=index * 997)

    def question(self, index: int, variant: int) -> list[int]:
        template = list(self.scenario.template)
        length = self.scenario.question_tokens - len(template)
        offset = self._question_base + (index * 7 + variant) * self.scenario.question_tokens
        return [*template, *self.pool.ids[offset : offset + length]]

    def _spec(self, request_id: str, round_name: str, ids: list[int]) -> RequestSpec:
        return RequestSpec(request_id, self.scenario.name, round_name, prompt=tuple(ids), max_tokens=self.scenario.max_tokens)

    def prompt(self, round_name: str, index: int, *, document_tag: str, variant: int) -> RequestSpec:
        if self.scenario.document_tokens:
            ids = [*self.document(document_tag, index), *self.question(index, variant)]
        else:
            ids = self.pool.prompt(self.salt(f"{document_tag} unique {index}"), self.scenario.question_tokens, offset=index * 991)
        return self._spec(f"{self.scenario.name}-{round_name}-{index}", round_name, ids)

    def cold_round(self) -> list[RequestSpec]:
        return [self.prompt(Round.COLD, i, document_tag="cold", variant=0) for i in range(self.scenario.requests)]

    def hit_round(self, round_name: str, variant: int) -> list[RequestSpec]:
        """The first ``reuse`` share reuses cold documents with new questions; the rest is fresh."""
        reusing = round(self.scenario.reuse * self.scenario.requests)
        return [
            self.prompt(round_name, i, document_tag="cold" if i < reusing else round_name, variant=variant)
            for i in range(self.scenario.requests)
        ]

    def conversations(self) -> tuple[list[RequestSpec], list[list[RequestSpec]]]:
        """multi_turn: each conversation's turns (history grows every turn), and a salted,
        never-reused copy of every turn after the first, for the cold comparison."""
        scenario = self.scenario
        conversations: list[list[RequestSpec]] = []
        cold: list[RequestSpec] = []
        for conv in range(scenario.requests):
            history = self.document("conversation", conv)
            turns = []
            for turn in range(scenario.turns):
                # Each turn adds the previous answer's worth of tokens and a new user message.
                history = [*history, *self.question(conv, turn)]
                turns.append(self._spec(f"{scenario.name}-c{conv}-t{turn}", Round.HIT, history))
                if turn:
                    fresh = [*self.salt(f"cold copy {conv} {turn}"), *history[16:]]
                    cold.append(self._spec(f"{scenario.name}-cold-c{conv}-t{turn}", Round.COLD, fresh))
            conversations.append(turns)
        return cold, conversations

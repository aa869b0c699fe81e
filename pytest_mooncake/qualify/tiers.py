"""Which tier served a round's prompt tokens: the instance's own prefix cache, Mooncake, or neither.

vLLM counts them apart: ``vllm:prefix_cache_hits`` are tokens its local cache held,
``vllm:external_prefix_cache_hits`` tokens a KV connector loaded for the blocks after those.
"""

from __future__ import annotations

from typing import Any

from pytest_mooncake.qualify.protocol import RoundResult

__all__ = ["TIERS", "TIERS_HEADING", "describe_tiers", "tier_shares", "within"]

TIERS = ("local", "mooncake")
TIERS_HEADING = "Where the prompt tokens came from, per round: "
_COUNTERS = {"local": "prefix_cache_hits", "mooncake": "external_prefix_cache_hits"}


def tier_shares(result: RoundResult) -> dict[str, Any]:
    """Each tier's hit tokens and share of the round's prompt tokens; ``reason`` when the server
    does not count a tier (an absent connector counts no Mooncake hits: 0, not unknown)."""
    prompt = sum(r.prompt_tokens or 0 for r in result.records if r.ok)
    local = result.counters.get(_COUNTERS["local"])
    if not prompt or local is None:
        return {"reason": "the server exports no vllm:prefix_cache_hits" if prompt else "no request was answered"}
    tokens = {"local": local, "mooncake": result.counters.get(_COUNTERS["mooncake"], 0.0)}
    shares = {tier: tokens[tier] / prompt for tier in TIERS}
    return {"prompt_tokens": prompt, **{f"{tier}_tokens": tokens[tier] for tier in TIERS}, **shares,
            "computed": 1 - sum(shares.values())}


def describe_tiers(round_name: str, shares: dict[str, Any]) -> str:
    """One line: ``hit: local 0.0%, Mooncake 96.6%, computed 3.4% of 44,544 prompt tokens``, each tier
    beside its prediction where ``shares`` has one (``predicted``, ``tolerance``)."""
    if "reason" in shares:
        return f"{round_name}: no tier split ({shares['reason']})"
    predicted = shares.get("predicted") or {}

    def told(tier: str, name: str) -> str:
        if tier not in predicted:
            return f"{name} {shares[tier]:.1%}"
        return f"{name} {shares[tier]:.1%} (predicted {predicted[tier]:.1%})"

    line = (f"{round_name}: {told('local', 'local')}, {told('mooncake', 'Mooncake')}, computed {shares['computed']:.1%} "
            f"of {shares['prompt_tokens']:,} prompt tokens")
    missed = [tier for tier in predicted if not within(shares[tier], predicted[tier], shares["tolerance"])]
    if missed:
        points = 100 * shares["tolerance"]
        line += f"; {' and '.join(missed)} off the prediction by more than {points:g} point{'' if points == 1 else 's'}"
    return line


def within(measured: float, predicted: float, tolerance: float) -> bool:
    """Whether a tier's measured share lies within ``tolerance`` (absolute) of its predicted share."""
    return abs(measured - predicted) <= tolerance + 1e-12

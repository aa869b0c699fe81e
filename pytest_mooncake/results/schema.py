"""The typed parts of a results document: round names and verdicts.

A verdict compares an effect measured in one run with a threshold through its 95% interval:

- ``passed``: the whole interval is on the passing side of the threshold;
- ``failed``: the whole interval is on the failing side;
- ``inconclusive``: the interval straddles the threshold. It is never a pass.

A sequential verdict (``serving.sequential``) is judged after each look and stops at the first
conclusive one or when its budget ends; it records its interval's level, its looks and why it
stopped (``STOP_DECIDED`` or ``STOP_BUDGET``).

numpy-free, so the report and the Allure quality gates read verdicts without the serving extra;
``serving.stats`` computes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class Word(str, Enum):
    """A str-valued enum: it equals, prints and serializes as its value, so the JSON keeps its strings."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Round(Word):
    """The rounds of a serving record (``RoundResult.name``); later hit rounds are ``hit2``, ``hit3`` ..."""

    WARMUP = "warmup"
    COLD = "cold"
    HIT = "hit"
    REPEAT = "repeat"  # the exact repeat of one cold prompt (output integrity)
    MIXED = "mixed"  # cold and hit requests interleaved, split into COLD and HIT afterwards
    TURN = "turn"  # one turn of a multi_turn conversation
    BASELINE = "baseline"  # A/B: the hit round of the endpoint without the cache
    WITH_CACHE = "with-cache"  # A/B: the hit round of the endpoint under test

    @staticmethod
    def hit(index: int) -> str:
        """The name of the ``index``-th hit round (1: ``hit``)."""
        return Round.HIT if index == 1 else f"{Round.HIT}{index}"


# The cache-hit round of a cold-versus-hit record and of an A/B record: what the cache delivers.
HIT_ROUNDS = (Round.HIT, Round.WITH_CACHE)


class Kind(Word):
    """What a results record measured; the report gives each kind its section."""

    SERVING = "serving"
    CAPACITY = "capacity"
    TOPOLOGY = "topology"
    REPLAY = "replay"
    SERVING_FAULT = "serving-fault"
    TRANSFER = "transfer"
    CONCURRENCY = "concurrency"
    EVICTION = "eviction"
    SOAK = "soak"
    FAULTS = "faults"


class Outcome(Word):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


class Op(Word):
    AT_LEAST = ">="
    AT_MOST = "<="
    WITHIN = "within"  # a band ±value around 0
    ABOVE = ">"  # a count that must not be zero (Mooncake served the hits)


class Statistic(Word):
    MEDIAN = "median"
    MEAN = "mean"
    TRIMMED = "trimmed"  # the 20%-trimmed geometric mean, with Yuen's interval (serving.stats.yuen)

    @property
    def described(self) -> str:
        return "20%-trimmed geometric mean" if self is Statistic.TRIMMED else self.value


@dataclass(frozen=True)
class Rule:
    """``>= value``, ``<= value``, ``within ±value`` or ``> value``; ``op`` may be given as its string."""

    op: Op
    value: float

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "op", Op(self.op))
        except ValueError:
            raise ValueError(f"threshold operator {self.op!r}: use one of {', '.join(repr(o.value) for o in Op)}") from None

    def __str__(self) -> str:
        return f"within ±{self.value:.0%}" if self.op is Op.WITHIN else f"{self.op} {self.value:.0%}"

    def holds(self, x: float) -> bool:
        if self.op is Op.AT_LEAST:
            return x >= self.value
        if self.op is Op.AT_MOST:
            return x <= self.value
        if self.op is Op.ABOVE:
            return x > self.value
        return -self.value <= x <= self.value

    def outcome(self, low: float, high: float) -> Outcome:
        """passed / failed / inconclusive for the interval [low, high]."""
        if self.holds(low) and self.holds(high):
            return Outcome.PASSED
        if self.op is Op.WITHIN:
            wholly_out = high < -self.value or low > self.value
        elif self.op is Op.AT_MOST:
            wholly_out = low > self.value
        else:
            wholly_out = not self.holds(high)
        return Outcome.FAILED if wholly_out else Outcome.INCONCLUSIVE


# The verdict that says whether Mooncake served the hits, and the gains that count only if it did.
UNSERVED = "mooncake_served"
GAINS = ("ttft_reduction", "throughput_gain", "capacity_gain")
STOP_DECIDED = "decided"
STOP_BUDGET = "budget exhausted"


def level_text(level: float) -> str:
    """95% -> "95%", 0.99167 -> "99.2%": the confidence level as the messages print it."""
    return f"{level * 100:.3g}%"


WORDS = {Outcome.PASSED: "meets", Outcome.FAILED: "misses", Outcome.INCONCLUSIVE: "is INCONCLUSIVE against"}


def _finite(value: float) -> float | None:
    # JSON has no infinity or NaN: an unbounded end (or an undefined effect) is null.
    return value if math.isfinite(value) else None


def uncredit_unserved(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """With a failed ``mooncake_served`` verdict (Mooncake served none of the hits), no gain
    verdict beside it can pass: each becomes FAILED, saying why, so nothing shows it as met."""
    unserved = any(v.metric == UNSERVED and v.outcome is Outcome.FAILED for v in verdicts)
    if not unserved:
        return list(verdicts)
    why = "Mooncake served none of the hits (mooncake_served failed), so the gain is not Mooncake's"
    return [v.uncredited(why) if v.metric.startswith(GAINS) else v for v in verdicts]


def _number(data: Mapping[str, Any], key: str, missing: float) -> float:
    value = data[key]
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} = {value!r} is not a number")
    return float(value)


@dataclass(frozen=True)
class Verdict:
    """An effect's interval (95%, or a sequential look's level) judged against a rule."""

    metric: str
    statistic: Statistic | None  # None: not one statistic of two samples (a capacity, a counter)
    effect: float  # the measured value, e.g. a TTFT reduction of 0.66; NaN when undefined
    ci_low: float  # -inf / inf: the interval is open on that side
    ci_high: float
    n_before: int
    n_after: int
    rule: Rule
    outcome: Outcome
    # Non-empty strata of the after side: above 1 the statistic is each stratum's weighted by its share
    # (serving.stats.bootstrap), which for the median is not the pooled median the rounds' stats hold.
    strata: int = 1
    level: float = 0.95  # the interval's confidence level
    looks: int = 1  # sequential: the looks taken; n_before / n_after are then the n at stop
    stop: str = ""  # sequential: STOP_DECIDED or STOP_BUDGET; empty: judged once
    # Wording only, not what was judged, so equality ignores it.
    context: str = field(default="", compare=False)  # appended to the standard sentence, e.g. " (a vs b)"
    wording: str = field(default="", compare=False)  # a judge's own sentence, in place of the standard one

    @property
    def judged_statistic(self) -> str | None:
        """The statistic the effect was computed from, named as every place that shows it names it."""
        if self.statistic is None:
            return None
        named = self.statistic.described
        return f"stratum-weighted {named}" if self.strata > 1 and self.statistic is not Statistic.MEAN else named

    @property
    def figure(self) -> str:
        """The judged value with its interval, e.g. ``39.3% (99.6% CI 37.5% .. 42.0%, stratum-weighted median
        of n=40 vs n=40; 2 looks, decided)``: written the same way in the terminal, the JSON, the report
        and Allure."""
        basis = f", {self.judged_statistic} of n={self.n_after} vs n={self.n_before}" if self.statistic else ""
        return (f"{self.effect:.1%} ({level_text(self.level)} CI {self.ci_low:.1%} .. {self.ci_high:.1%}"
                f"{basis}{self.sequence})")

    @property
    def message(self) -> str:
        if self.wording:
            return self.wording
        why = ("; the interval straddles the threshold: more requests per round narrow it"
               if self.outcome is Outcome.INCONCLUSIVE else "")
        if self.outcome is Outcome.INCONCLUSIVE and self.stop == STOP_BUDGET:
            why = ("; the interval still straddles the threshold when the budget ran out: a larger "
                   "--mooncake-verdict-looks or --mooncake-verdict-seconds narrows it")
        return f"{self.metric} = {self.figure} {WORDS[self.outcome]} the threshold {self.rule}{self.context}{why}"

    @property
    def sequence(self) -> str:
        """"; 2 looks, decided" for a sequential verdict, else empty."""
        return f"; {self.looks} look{'s' if self.looks != 1 else ''}, {self.stop}" if self.stop else ""

    def uncredited(self, why: str) -> Verdict:
        """This verdict failed because what it measured is not what the run qualifies (e.g. a gain
        Mooncake did not serve): it cannot pass, whatever its interval says, and never reads as met."""
        if self.outcome is Outcome.FAILED:
            return self
        return replace(self, outcome=Outcome.FAILED,
                       wording=f"{self.metric} = {self.figure} against the threshold {self.rule}{self.context}: NOT CREDITED, {why}")

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; a sequential verdict adds its level, looks and stop reason."""
        return {
            "metric": self.metric,
            "statistic": None if self.statistic is None else self.statistic.value,
            "effect": _finite(self.effect),
            "ci_low": _finite(self.ci_low),
            "ci_high": _finite(self.ci_high),
            "n_before": self.n_before,
            "n_after": self.n_after,
            "op": self.rule.op.value,
            "threshold": self.rule.value,
            "outcome": self.outcome.value,
            "strata": self.strata,
            **({"level": self.level, "looks": self.looks, "stop": self.stop} if self.stop else {}),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """The verdict ``as_dict`` wrote; its message is kept as written."""
        try:
            statistic = data.get("statistic")
            return cls(
                metric=str(data["metric"]),
                statistic=None if statistic is None else Statistic(statistic),
                effect=_number(data, "effect", math.nan),
                ci_low=_number(data, "ci_low", -math.inf),
                ci_high=_number(data, "ci_high", math.inf),
                n_before=int(data["n_before"]),
                n_after=int(data["n_after"]),
                rule=Rule(data["op"], _number(data, "threshold", math.nan)),
                outcome=Outcome(data["outcome"]),
                strata=int(data.get("strata") or 1),
                level=_number(data, "level", 0.95) if "level" in data else 0.95,
                looks=int(data.get("looks", 1)),
                stop=str(data.get("stop") or ""),
                wording=str(data.get("message") or ""),
            )
        except KeyError as exc:
            problem = f"no {exc.args[0]!r}"
        except (TypeError, ValueError) as exc:
            problem = str(exc)
        raise ValueError(f"verdict {data.get('metric', '?')!r}: {problem}; expected the keys Verdict.as_dict writes: "
                         "metric, statistic, effect, ci_low, ci_high, n_before, n_after, op, threshold, outcome, message")

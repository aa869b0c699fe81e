"""The typed parts of a results document: round names and verdicts.

A verdict compares an effect measured in one run with a threshold through its 95% interval:

- ``passed``: the whole interval is on the passing side of the threshold;
- ``failed``: the whole interval is on the failing side;
- ``inconclusive``: the interval straddles the threshold. It is never a pass.

numpy-free, so the report and the Allure quality gates read verdicts without the serving extra;
``serving.stats`` computes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
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


WORDS = {Outcome.PASSED: "meets", Outcome.FAILED: "misses", Outcome.INCONCLUSIVE: "is INCONCLUSIVE against"}


def _finite(value: float) -> float | None:
    # JSON has no infinity or NaN: an unbounded end (or an undefined effect) is null.
    return value if math.isfinite(value) else None


def _number(data: Mapping[str, Any], key: str, missing: float) -> float:
    value = data[key]
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} = {value!r} is not a number")
    return float(value)


@dataclass(frozen=True)
class Verdict:
    """An effect's 95% interval judged against a rule."""

    metric: str
    statistic: Statistic | None  # None: not one statistic of two samples (a capacity, a counter)
    effect: float  # the measured value, e.g. a TTFT reduction of 0.66; NaN when undefined
    ci_low: float  # -inf / inf: the interval is open on that side
    ci_high: float
    n_before: int
    n_after: int
    rule: Rule
    outcome: Outcome
    # Wording only, not what was judged, so equality ignores it.
    context: str = field(default="", compare=False)  # appended to the standard sentence, e.g. " (a vs b)"
    wording: str = field(default="", compare=False)  # a judge's own sentence, in place of the standard one

    @property
    def message(self) -> str:
        if self.wording:
            return self.wording
        basis = f", {self.statistic} of n={self.n_after} vs n={self.n_before}" if self.statistic else ""
        why = ("; the interval straddles the threshold: more requests per round narrow it"
               if self.outcome is Outcome.INCONCLUSIVE else "")
        return (f"{self.metric} = {self.effect:.1%} (95% CI {self.ci_low:.1%} .. {self.ci_high:.1%}{basis}) "
                f"{WORDS[self.outcome]} the threshold {self.rule}{self.context}{why}")

    def as_dict(self) -> dict[str, Any]:
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
                wording=str(data.get("message") or ""),
            )
        except KeyError as exc:
            problem = f"no {exc.args[0]!r}"
        except (TypeError, ValueError) as exc:
            problem = str(exc)
        raise ValueError(f"verdict {data.get('metric', '?')!r}: {problem}; expected the keys Verdict.as_dict writes: "
                         "metric, statistic, effect, ci_low, ci_high, n_before, n_after, op, threshold, outcome, message")

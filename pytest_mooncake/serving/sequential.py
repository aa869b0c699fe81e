"""Sequential verdicts: measure in looks, stop at the first conclusive interval or when the budget ends.

A verdict judged after every batch of requests and stopped at the first conclusive interval
"peeks": with plain 95% intervals and ten looks, a true effect exactly at the threshold passes
far more often than 2.5% of the time. This module uses a group-sequential design with
Bonferroni alpha spending (Jennison & Turnbull, *Group Sequential Methods with Applications to
Clinical Trials*, Chapman & Hall/CRC 2000, ch. 2 and 7; the Bonferroni bound is the simplest
member of the alpha-spending family of Lan & DeMets, Biometrika 70(3), 1983): at most ``looks``
looks are planned, each look's interval is at level ``1 - (1 - confidence) / looks``, so the
chance that *any* look's interval misses the true effect is at most ``1 - confidence`` whatever
rule (a conclusive interval, the clock) decides when to stop. It is conservative; the
operating characteristic measured by ``serving.operating`` shows how much.

``Looks`` is the loop: ``for look in looks`` yields the look numbers; after each look the
caller judges its verdicts at ``sequence.level`` and tells ``sequence.conclude(outcomes)``,
which ends the loop when no verdict is inconclusive, one has conclusively failed, the last
look is done, or the seconds budget is spent. ``sequence.stamp(verdict)`` records the looks
taken and why it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pytest_mooncake.results.schema import STOP_BUDGET, STOP_DECIDED, Outcome, Verdict


@dataclass(frozen=True)
class Design:
    """At most ``looks`` looks within ``seconds``; ``confidence`` holds over all of them together."""

    looks: int
    seconds: float = math.inf
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.looks < 1 or not 0 < self.confidence < 1 or self.seconds <= 0:
            raise ValueError(f"a sequential design needs looks >= 1, 0 < confidence < 1 and seconds > 0, got {self}")

    @property
    def level(self) -> float:
        """Each look's interval level: the error ``1 - confidence`` split evenly over the looks."""
        return 1.0 - (1.0 - self.confidence) / self.looks


class Looks:
    """The looks of one sequential verdict (or of several judged together on the same data)."""

    def __init__(self, design: Design, clock: Callable[[], float] = time.monotonic) -> None:
        self.design = design
        self.clock = clock
        self.started = clock()
        self.looks = 0
        self.stop = ""
        self._judged = False

    @property
    def level(self) -> float:
        return self.design.level

    def __iter__(self) -> Iterator[int]:
        while not self.stop:
            self.looks += 1
            self._judged = False
            yield self.looks
            if not self._judged:
                raise RuntimeError("a look was taken without conclude(): call it after judging each look")

    def conclude(self, outcomes: Iterable[Outcome]) -> bool:
        """Record this look's outcomes; True when the sequence stops here."""
        seen = list(outcomes)
        self._judged = True
        if Outcome.FAILED in seen or Outcome.INCONCLUSIVE not in seen:
            self.stop = STOP_DECIDED
        elif self.looks >= self.design.looks or self.clock() - self.started >= self.design.seconds:
            self.stop = STOP_BUDGET
        else:
            self.stop = ""
            return False
        return True

    def stamp(self, verdict: Verdict) -> Verdict:
        """``verdict`` with the looks taken and the stop reason."""
        return dataclasses.replace(verdict, looks=self.looks, stop=self.stop or STOP_BUDGET)

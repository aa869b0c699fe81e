"""Sequential verdicts: measure in looks, stop at the first conclusive interval or when the budget ends.

A verdict judged after every batch of requests and stopped at the first conclusive interval
"peeks": with plain 95% intervals and ten looks, a true effect exactly at the threshold passes
far more often than 2.5% of the time. This module uses a group-sequential design with
Bonferroni alpha spending (Jennison & Turnbull, *Group Sequential Methods with Applications to
Clinical Trials*, Chapman & Hall/CRC 2000, ch. 2 and 7; the Bonferroni bound is the simplest
member of the alpha-spending family of Lan & DeMets, Biometrika 70(3), 1983): at most ``looks``
looks are planned and the error ``1 - confidence`` is split over them, ``first_share`` of it to
the first look and the rest evenly over the others, so the chance that *any* look's interval
misses the true effect is at most ``1 - confidence`` whatever rule (a conclusive interval, the
clock) decides when to stop. A clear effect should stop at the first look, so the verdicts give
it a fifth of the error (a 99% interval) and the up to 23 later looks 99.8% each. It is
conservative; the operating characteristic measured by ``serving.operating`` shows how much.

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
    """At most ``looks`` looks within ``seconds``; ``confidence`` holds over all of them together.
    ``first_share`` of the error goes to the first look (0: an even split over all looks)."""

    looks: int
    seconds: float = math.inf
    confidence: float = 0.95
    first_share: float = 0.0

    def __post_init__(self) -> None:
        if (self.looks < 1 or not 0 < self.confidence < 1 or self.seconds <= 0 or not 0 <= self.first_share < 1
                or (self.looks == 1 and self.first_share)):
            raise ValueError(f"a sequential design needs looks >= 1, 0 < confidence < 1, seconds > 0 and "
                             f"0 <= first_share < 1 (0 with a single look), got {self}")

    def level(self, look: int = 1) -> float:
        """The interval level of look ``look`` (1-based): its share of the error ``1 - confidence``."""
        error = 1.0 - self.confidence
        if not self.first_share:
            return 1.0 - error / self.looks
        return 1.0 - (error * self.first_share if look == 1 else error * (1 - self.first_share) / (self.looks - 1))


class Looks:
    """The looks of one sequential verdict (or of several judged together on the same data)."""

    def __init__(self, design: Design, clock: Callable[[], float] = time.monotonic) -> None:
        self.design = design
        self.clock = clock
        self.started = clock()
        self.looks = 0
        self.stop = ""
        self._concluded = 0  # the last look conclude() was told about

    @property
    def level(self) -> float:
        """The current look's level (the first's before any look)."""
        return self.design.level(max(self.looks, 1))

    def __iter__(self) -> Iterator[int]:
        while not self.stop:
            self.looks += 1
            yield self.looks
            if self._concluded != self.looks:
                raise RuntimeError("a look was taken without conclude(): call it after judging each look")

    def conclude(self, outcomes: Iterable[Outcome]) -> bool:
        """Record this look's outcomes; True when the sequence stops here."""
        seen = list(outcomes)
        self._concluded = self.looks
        if Outcome.FAILED in seen or Outcome.INCONCLUSIVE not in seen:
            self.stop = STOP_DECIDED
        elif self.looks >= self.design.looks or self.clock() - self.started >= self.design.seconds:
            self.stop = STOP_BUDGET
        return bool(self.stop)

    def stamp(self, verdict: Verdict) -> Verdict:
        """``verdict`` with the looks taken and the stop reason."""
        return dataclasses.replace(verdict, looks=self.looks, stop=self.stop or STOP_BUDGET)

"""Net Promoter Score: bands and the %promoters - %detractors figure.

NPS is never a mean score: passives count in the denominator only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.events import Band


def band(score: int) -> Band:
    """Promoter 9-10, passive 7-8, detractor 0-6."""
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


@dataclass
class NpsCounts:
    """Promoter/passive/detractor tallies; an aggregation with initialize/agg/result."""

    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @property
    def n(self) -> int:
        return self.promoters + self.passives + self.detractors

    def agg(self, score: int, weight: int = 1) -> NpsCounts:
        b = band(score)
        if b == "promoter":
            self.promoters += weight
        elif b == "passive":
            self.passives += weight
        else:
            self.detractors += weight
        return self

    def result(self) -> float | None:
        """NPS in [-100, 100], or None with no responses."""
        n = self.n
        if n <= 0:
            return None
        return 100.0 * (self.promoters - self.detractors) / n

    def confidence_interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """95% interval from the standard error of NPS.

        With p = share of promoters and d = share of detractors, the variance of
        one response's value (+1, 0, -1) is (p + d) - (p - d)^2; the standard
        error of NPS (in points) is 100 * sqrt(var / n).
        """
        n = self.n
        if n <= 0:
            return None
        p, d = self.promoters / n, self.detractors / n
        se = 100.0 * math.sqrt(max((p + d) - (p - d) ** 2, 0.0) / n)
        value = 100.0 * (p - d)
        return (max(-100.0, value - z * se), min(100.0, value + z * se))


def nps_of(scores: Iterable[int]) -> float | None:
    """NPS of a group of 0-10 scores.

    >>> nps_of([10, 9, 8, 7, 6, 0])
    0.0
    >>> nps_of([10, 10, 10, 3])
    50.0
    """
    counts = NpsCounts()
    for score in scores:
        counts.agg(score)
    return counts.result()

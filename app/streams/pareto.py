"""The Pareto boundary: trailing revenue of every customer, and the A/B cutoffs from it.

A worker mirrors the revenue of the customers of the partitions it owns (seeded
from the customers table on assignment, kept current by each batch) and takes
the other partitions' revenue from their summaries (summaries.py). The cutoffs
are the revenues above which the top ``value_policy.top_share`` of customers lie.

The owned partitions' revenues are also kept in order, all in one ``SortedList`` (a
change costs a removal and an insertion, a few microseconds), so the cutoffs are found
by bisection, exact after every batch, in about a tenth of a millisecond at a million
customers. They used to be recounted by sorting every revenue once 1% of them had
changed, and every 2 s anyway: 15-20 ms a count at 100,000 customers, several a
second live (where nearly every event changes a revenue as of now), and the event
loop held for it each time; about a tenth of a second a count at a million.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sortedcontainers import SortedList

from app.domain import value
from app.streams.summaries import Received, weighted

# Weighted counts are compared with this slack, as value.cutoffs_of does.
_EPS = 1e-9


class ParetoMirror:
    """Revenue per owned partition and customer; a cache derived from the table, not state."""

    def __init__(self) -> None:
        self.revenues: dict[int, dict[bytes, float]] = {}
        # The same revenues in order, all partitions in one (the mirror holds the owned
        # partitions only: Ownership re-seeds it on every assignment). None after a
        # re-seed or a revocation: built again in one sort when first needed.
        self._sorted: SortedList[float] | None = None
        self._changes = 0  # revenue figures changed since the last count
        self._stale = False  # re-seeded since the last count
        # the other partitions' summaries last counted, and their points in order
        self._remote: tuple[list[dict[str, Any]], list[float], list[float]] = ([], [], [0.0])

    @property
    def dirty(self) -> bool:
        """The boundary may have moved since the last count."""
        return self._changes > 0 or self._stale

    def merge(self, revenues: Mapping[int, Mapping[bytes, float]]) -> None:
        """A batch's changed revenues; the boundary is stale if any figure moved."""
        for part, changed in revenues.items():
            for key, revenue in changed.items():
                if self._set(part, key, revenue):
                    self._changes += 1

    def put(self, part: int, key: bytes, revenue: float) -> None:
        self._set(part, key, revenue)

    def _set(self, part: int, key: bytes, revenue: float) -> bool:
        mirror = self.revenues.get(part)
        if mirror is None:
            mirror = self.revenues[part] = {}
        old = mirror.get(key)
        if old == revenue:
            return False
        mirror[key] = revenue
        ordered = self._sorted
        if ordered is not None:
            if old is not None:
                ordered.remove(old)
            ordered.add(revenue)
        return True

    def drop(self, part: int, key: bytes) -> None:
        old = self.revenues.get(part, {}).pop(key, None)
        ordered = self._sorted
        if old is not None and ordered is not None:
            ordered.remove(old)
        self._changes += 1

    def invalidate(self) -> None:
        """The mirror was re-seeded (an assignment): ordered again when next counted."""
        self._sorted = None
        self._stale = True

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions no longer owned."""
        kept = set(partitions)
        for p in set(self.revenues) - kept:
            del self.revenues[p]
            self._sorted = None

    def _ordered(self) -> SortedList[float]:
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = SortedList(
                itertools.chain.from_iterable(m.values() for m in self.revenues.values()))
        return ordered

    def summary(self, part: int) -> tuple[list[list[float]], int]:
        """(weighted revenue points, customer count) of one owned partition."""
        mirror = self.revenues.get(part, {})
        return weighted(list(mirror.values())), len(mirror)

    def cutoffs(self, top_share: float, owned: set[int], remote: Received) -> value.RevenueCutoffs:
        """The boundaries over the mirrored customers (each counts once) and the summary
        points of the partitions not ``owned`` (each counts its weight): the same figures
        as value.cutoffs_of over all of them."""
        self._stale = False
        self._changes = 0
        mine = self._ordered()
        values, above = self._remote_points([s for _, s in remote.others(owned)])
        total = len(mine) + above[0]
        if total <= 0 or top_share <= 0:
            return value.RevenueCutoffs()
        a = _reaching(max(1.0, math.ceil(top_share * total - _EPS)), mine, values, above)
        b = _reaching(min(total, math.ceil((top_share + value.B_SHARE) * total - _EPS)),
                      mine, values, above)  # fmt: skip
        return value.RevenueCutoffs(a if a is not None and a > 0 else None,
                                    b if b is not None and b > 0 else None)  # fmt: skip

    def _remote_points(self, summaries: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        """The summaries' points in ascending order, and the weight at or after each index
        (one more entry: 0). Reused while the same summary objects are counted."""
        seen, values, above = self._remote
        same = len(seen) == len(summaries)
        if same and all(a is b for a, b in zip(seen, summaries, strict=True)):
            return values, above
        points = sorted((float(v), float(w)) for s in summaries for v, w in s.get("revenues", []))
        values = [v for v, _ in points]
        above = list(itertools.accumulate((w for _, w in reversed(points)), initial=0.0))[::-1]
        self._remote = (summaries, values, above)
        return values, above


def _reaching(k: float, mine: SortedList[float], values: list[float],
              above: list[float]) -> float | None:  # fmt: skip
    """The largest revenue ``v`` with at least ``k`` (less _EPS) weight at or above it, or
    None if the total falls short: what value.cutoffs_of finds walking the sorted points.

    The weight at or above ``v`` only falls as ``v`` grows, so each ordered sequence (the
    mirror's, the summaries') is bisected for its largest value that still reaches
    ``k``; the larger of the two is it.
    """
    n = len(mine)

    def weight_from(v: float) -> float:
        return n - mine.bisect_left(v) + above[bisect.bisect_left(values, v)]

    best: float | None = None
    seqs: tuple[Sequence[float], ...] = (mine, values)
    for seq in seqs:
        if not seq or (best is not None and seq[-1] <= best):
            continue
        lo, hi, found = 0, len(seq) - 1, -1
        while lo <= hi:
            mid = (lo + hi) // 2
            if weight_from(seq[mid]) >= k - _EPS:
                found, lo = mid, mid + 1
            else:
                hi = mid - 1
        if found >= 0 and (best is None or seq[found] > best):
            best = seq[found]
    return best

"""The Pareto boundary: trailing revenue of every customer, and the A/B cutoffs from it.

A worker mirrors the revenue of the customers of the partitions it owns (seeded
from the customers table on assignment, kept current by each batch) and takes
the other partitions' revenue from their summaries (summaries.py). The cutoffs
are the revenues above which the top ``value_policy.top_share`` of customers lie.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping

import numpy as np

from app.domain import value
from app.streams.summaries import Received, weighted

# Above this many revenue points a recount runs at most once a second.
LARGE_BASE = 50_000


class ParetoMirror:
    """Revenue per owned partition and customer; a cache derived from the table, not state."""

    def __init__(self) -> None:
        self.revenues: dict[int, dict[bytes, float]] = {}
        self.dirty = False
        self._counted_at = 0.0

    def merge(self, revenues: Mapping[int, Mapping[bytes, float]]) -> None:
        """A batch's changed revenues; the boundary is stale if any figure moved."""
        for part, changed in revenues.items():
            mirror = self.revenues.setdefault(part, {})
            for key, revenue in changed.items():
                if mirror.get(key) != revenue:
                    mirror[key] = revenue
                    self.dirty = True

    def put(self, part: int, key: bytes, revenue: float) -> None:
        self.revenues.setdefault(part, {})[key] = revenue

    def drop(self, part: int, key: bytes) -> None:
        self.revenues.get(part, {}).pop(key, None)
        self.dirty = True

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions no longer owned."""
        kept = set(partitions)
        for p in set(self.revenues) - kept:
            del self.revenues[p]

    def summary(self, part: int) -> tuple[list[list[float]], int]:
        """(weighted revenue points, customer count) of one owned partition."""
        mirror = self.revenues.get(part, {})
        return weighted(list(mirror.values())), len(mirror)

    def cutoffs(
        self, top_share: float, owned: set[int], remote: Received,
        force: bool = False,
    ) -> value.RevenueCutoffs | None:  # fmt: skip
        """New boundaries, or None when a very large base was recounted less than 1 s ago."""
        now = time.monotonic()
        mine = [m for p, m in self.revenues.items() if p in owned or not owned]
        theirs = [pt for _, summary in remote.others(owned) for pt in summary.get("revenues", [])]
        n = sum(len(m) for m in mine) + len(theirs)
        if not force and n > LARGE_BASE and now - self._counted_at < 1.0:
            return None
        self.dirty = False
        self._counted_at = now
        revenues = np.fromiter(
            itertools.chain(*(m.values() for m in mine), (float(v) for v, _ in theirs)),
            dtype=np.float64, count=n,
        )  # fmt: skip
        weights = np.ones(n)
        weights[n - len(theirs):] = [float(w) for _, w in theirs]
        return value.cutoffs_of(revenues, weights, top_share)

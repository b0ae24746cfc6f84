"""The revenue mirror's Pareto boundary: when a large base is counted again."""

from __future__ import annotations

from app.streams.pareto import LARGE_BASE, RECOUNT_SHARE, ParetoMirror
from app.streams.summaries import Received


def mirror_of(n: int) -> ParetoMirror:
    pareto = ParetoMirror()
    pareto.merge({0: {b"c%d" % i: float(i) for i in range(n)}})
    return pareto


def test_a_large_base_is_counted_again_once_a_share_of_it_changed() -> None:
    n = LARGE_BASE + 10_000
    pareto = mirror_of(n)
    assert pareto.cutoffs(0.2, {0}, Received()) is not None, "the first count"
    step = int(n * RECOUNT_SHARE) - 1
    pareto.merge({0: {b"c%d" % i: float(i) + 0.5 for i in range(step)}})
    assert pareto.dirty and pareto.cutoffs(0.2, {0}, Received()) is None, "below the share"
    assert pareto.cutoffs(0.2, {0}, Received(), force=True) is not None, "forced"
    pareto.merge({0: {b"c%d" % i: float(i) + 0.7 for i in range(step + 1)}})
    assert pareto.cutoffs(0.2, {0}, Received()) is not None, "the share reached"


def test_a_small_base_is_counted_on_every_change_and_a_reseeded_one_at_once() -> None:
    small = mirror_of(100)
    assert small.cutoffs(0.2, {0}, Received()) is not None
    small.merge({0: {b"c1": 99.0}})
    assert small.cutoffs(0.2, {0}, Received()) is not None
    large = mirror_of(LARGE_BASE + 1)
    assert large.cutoffs(0.2, {0}, Received()) is not None
    large.invalidate()  # what an indexing pass after an assignment does
    assert large.cutoffs(0.2, {0}, Received()) is not None

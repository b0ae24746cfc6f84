"""The revenue mirror's Pareto boundary: exact after every change, against the sorting rule."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from app.domain.value import RevenueCutoffs, cutoffs_of
from app.streams.pareto import ParetoMirror
from app.streams.summaries import Received, weighted

REVENUE = st.sampled_from([0.0, 10.0, 50.0, 120.0, 120.0, 999.5, 4000.0])


def sorting_rule(mirror: dict[int, dict[bytes, float]], owned: set[int],
                 remote: dict[int, list[list[float]]], share: float) -> RevenueCutoffs:  # fmt: skip
    """The boundary as value.cutoffs_of finds it: every point sorted, walked by weight."""
    mine = [v for p, m in mirror.items() if p in owned for v in m.values()]
    theirs = [(v, w) for p, pts in remote.items() if p not in owned for v, w in pts]
    revenues = np.array(mine + [v for v, _ in theirs], dtype=np.float64)
    weights = np.array([1.0] * len(mine) + [w for _, w in theirs], dtype=np.float64)
    return cutoffs_of(revenues, weights, share)


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), REVENUE | st.none()),
                max_size=120),
       st.dictionaries(st.integers(3, 4), st.lists(REVENUE, max_size=30), max_size=2),
       st.sampled_from([0.05, 0.2, 0.5]))  # fmt: skip
def test_cutoffs_after_any_changes_equal_the_sorting_rule(
    changes: list[tuple[int, int, float | None]], remote_values: dict[int, list[float]],
    share: float,
) -> None:
    pareto, expected = ParetoMirror(), {0: {}, 1: {}, 2: {}}  # type: dict[int, dict[bytes, float]]
    received = Received()
    remote = {p: weighted(vs, limit=7) for p, vs in remote_values.items()}
    for p, pts in remote.items():
        received.receive(p, json.dumps({"revenues": pts}).encode())
    owned = {0, 1, 2}
    for i, (part, n, revenue) in enumerate(changes):
        key = b"c%d" % n
        if revenue is None:
            pareto.drop(part, key)
            expected[part].pop(key, None)
        elif i % 2:
            pareto.merge({part: {key: revenue}})
            expected[part][key] = revenue
        else:
            pareto.put(part, key, revenue)
            expected[part][key] = revenue
        if i % 17 == 0:
            assert pareto.cutoffs(share, owned, received) == sorting_rule(
                expected, owned, remote, share)
    assert pareto.cutoffs(share, owned, received) == sorting_rule(expected, owned, remote, share)
    pareto.invalidate()  # what an indexing pass after an assignment does: ordered again
    assert pareto.cutoffs(share, owned, received) == sorting_rule(expected, owned, remote, share)
    pareto.keep_only({0, 1})  # partition 2 revoked: its customers leave the count
    assert pareto.cutoffs(share, {0, 1}, received) == sorting_rule(
        expected, {0, 1}, remote, share)


def test_dirty_until_counted_and_after_any_change() -> None:
    pareto = ParetoMirror()
    pareto.merge({0: {b"a": 10.0, b"b": 20.0}})
    assert pareto.dirty
    assert pareto.cutoffs(0.5, {0}, Received()) == RevenueCutoffs(20.0, 10.0)
    assert not pareto.dirty
    pareto.merge({0: {b"a": 10.0}})
    assert not pareto.dirty, "the same revenue again changes nothing"
    pareto.drop(0, b"b")
    assert pareto.dirty and pareto.cutoffs(0.5, {0}, Received()) == RevenueCutoffs(10.0, 10.0)
    pareto.keep_only(())
    assert pareto.cutoffs(0.5, {0}, Received()) == RevenueCutoffs() and pareto.summary(0)[1] == 0

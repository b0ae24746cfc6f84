"""Partition summaries: what is decoded, and the revenue points other workers read."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from app.domain.value import cutoffs_of
from app.streams.summaries import MAX_REVENUE_POINTS, Received, weighted


def test_only_the_summaries_of_partitions_not_owned_are_decoded() -> None:
    received = Received()
    received.receive(0, b"not json: never decoded while partition 0 is owned")
    received.receive(1, json.dumps({"customers": 3}).encode())
    assert received.others({0}) == [(1, {"customers": 3})]
    assert sorted(received) == [0, 1]
    received.receive(1, None)  # a tombstone
    assert received.others({0}) == [] and len(received) == 1
    with pytest.raises(json.JSONDecodeError):
        received.others(set())


@pytest.mark.parametrize("n", [0, 1, 7, MAX_REVENUE_POINTS, MAX_REVENUE_POINTS + 1, 55_555])
def test_weighted_points_keep_every_value_or_every_kth_with_weight_k(n: int) -> None:
    rnd = random.Random(n)
    values = [rnd.uniform(-50, 5000) for _ in range(n)]
    points = weighted(values)
    ordered = sorted(values, reverse=True)
    limit = MAX_REVENUE_POINTS
    if n <= limit:
        assert points == [[round(v, 2), 1] for v in ordered]
    else:
        step = n / limit
        assert len(points) == limit and all(w == step for _, w in points)
        assert [v for v, _ in points] == [round(ordered[int(i * step)], 2) for i in range(limit)]
        assert sum(w for _, w in points) == pytest.approx(n)


def test_a_cutoff_read_from_sampled_points_is_within_one_step_of_ranks() -> None:
    """What another worker computes from a partition's summary above MAX_REVENUE_POINTS."""
    rnd = random.Random(3)
    values = [round(rnd.lognormvariate(5, 1.2), 2) for _ in range(12_500)]
    points = weighted(values)
    exact = cutoffs_of(np.array(values), np.ones(len(values)), 0.2)
    sampled = cutoffs_of(np.array([v for v, _ in points]), np.array([w for _, w in points]), 0.2)
    assert exact.a is not None and sampled.a is not None
    lo, hi = sorted((exact.a, sampled.a))
    between = sum(1 for v in values if lo < v <= hi)
    assert between <= len(values) / MAX_REVENUE_POINTS

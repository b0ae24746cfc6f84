"""Partition summaries: what is decoded, and the revenue points other workers read."""

from __future__ import annotations

import json
import random

import pytest

from app.streams.summaries import Received, weighted


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


@pytest.mark.parametrize("n", [0, 1, 7, 20_000, 20_001, 55_555])
def test_weighted_points_keep_every_value_or_every_kth_with_weight_k(n: int) -> None:
    rnd = random.Random(n)
    values = [rnd.uniform(-50, 5000) for _ in range(n)]
    points = weighted(values)
    ordered = sorted(values, reverse=True)
    if n <= 20_000:
        assert points == [[round(v, 2), 1] for v in ordered]
    else:
        step = n / 20_000
        assert len(points) == 20_000 and all(w == step for _, w in points)
        assert [v for v, _ in points] == [round(ordered[int(i * step)], 2) for i in range(20_000)]
        assert sum(w for _, w in points) == pytest.approx(n)

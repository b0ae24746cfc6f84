import statistics
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.value import (
    RevenueCutoffs,
    cutoffs_from,
    cutoffs_from_weighted,
    median,
    typical_gap_days,
)


@pytest.mark.parametrize("n", [1, 5, 10, 11, 100])
def test_weighted_cutoffs_equal_plain_ones_for_unit_weights(n: int) -> None:
    values = [float(i * 10) for i in range(n)]
    assert cutoffs_from_weighted([(v, 1) for v in values], 0.2) == cutoffs_from(values, 0.2)


def test_top_fifth_of_ten() -> None:
    values = [float((i + 1) * 100) for i in range(10)]
    assert cutoffs_from(values, 0.2) == RevenueCutoffs(a=900.0, b=600.0)
    assert cutoffs_from([0.0] * 5, 0.2) == RevenueCutoffs()


def reference_cutoffs(points: list[tuple[float, float]], share: float) -> RevenueCutoffs:
    """The rule written out plainly: walk customers by revenue, highest first."""
    import math

    ordered = sorted(points, key=lambda p: -p[0])
    total = sum(w for _, w in ordered)
    if total <= 0:
        return RevenueCutoffs()
    k_a, k_b = max(1.0, math.ceil(share * total - 1e-9)), min(total, math.ceil((share + 0.3) * total - 1e-9))
    a = b = None
    seen = 0.0
    for revenue, weight in ordered:
        seen += weight
        if a is None and seen >= k_a - 1e-9:
            a = revenue
        if b is None and seen >= k_b - 1e-9:
            b = revenue
            break
    return RevenueCutoffs(a if a and a > 0 else None, b if b and b > 0 else None)


@pytest.mark.parametrize("seed", range(20))
def test_weighted_cutoffs_match_the_plain_rule(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    points = [(float(rnd.choice([0, 10, 50, 120, rnd.randint(1, 5000)])),
               rnd.choice([1.0, 1.0, 2.5, 40.0])) for _ in range(rnd.randint(1, 300))]  # fmt: skip
    share = rnd.choice([0.05, 0.2, 0.5])
    assert cutoffs_from_weighted(points, share) == reference_cutoffs(points, share)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=40))
def test_median_is_statistics_median(values: list[float]) -> None:
    assert median(values) == statistics.median(values)


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=0, max_size=30))
def test_typical_gap_is_the_median_gap_of_distinct_times(minutes: list[int]) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=m) for m in minutes]
    ordered = sorted(set(times))
    want = (statistics.median([(b - a).total_seconds() / 86400 for a, b in zip(ordered, ordered[1:], strict=False)])
            if len(ordered) > 1 else None)
    assert typical_gap_days(times) == want

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.nps import NpsCounts, band, nps_of


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0, "detractor"), (6, "detractor"), (7, "passive"), (8, "passive"), (9, "promoter"),
     (10, "promoter")],
)  # fmt: skip
def test_bands(score: int, expected: str) -> None:
    assert band(score) == expected


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([], None),
        ([10, 9, 8, 7, 6, 0], 0.0),  # passives count in the denominator only
        ([10, 10, 10, 3], 50.0),
        ([9, 9, 7, 7], 50.0),  # not a mean score: mean 8 would be "passive"
        ([0, 1, 2], -100.0),
        ([10], 100.0),
    ],
)
def test_nps_is_percent_promoters_minus_percent_detractors(
    scores: list[int], expected: float | None
) -> None:
    assert nps_of(scores) == expected


@given(st.lists(st.integers(0, 10), min_size=1, max_size=300))
def test_nps_in_range_and_interval_contains_it(scores: list[int]) -> None:
    counts = NpsCounts()
    for s in scores:
        counts.agg(s)
    value = counts.result()
    assert value is not None and -100 <= value <= 100
    ci = counts.confidence_interval()
    assert ci is not None and -100 <= ci[0] <= value <= ci[1] <= 100


def test_confidence_interval_narrows_with_n() -> None:
    small, large = NpsCounts(5, 3, 2), NpsCounts(500, 300, 200)
    assert small.result() == large.result() == 30.0
    s, lg = small.confidence_interval(), large.confidence_interval()
    assert s is not None and lg is not None
    assert (lg[1] - lg[0]) < (s[1] - s[0]) / 5

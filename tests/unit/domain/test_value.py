import pytest

from app.domain.value import RevenueCutoffs, cutoffs_from, cutoffs_from_weighted


@pytest.mark.parametrize("n", [1, 5, 10, 11, 100])
def test_weighted_cutoffs_equal_plain_ones_for_unit_weights(n: int) -> None:
    values = [float(i * 10) for i in range(n)]
    assert cutoffs_from_weighted([(v, 1) for v in values], 0.2) == cutoffs_from(values, 0.2)


def test_top_fifth_of_ten() -> None:
    values = [float((i + 1) * 100) for i in range(10)]
    assert cutoffs_from(values, 0.2) == RevenueCutoffs(a=900.0, b=600.0)
    assert cutoffs_from([0.0] * 5, 0.2) == RevenueCutoffs()

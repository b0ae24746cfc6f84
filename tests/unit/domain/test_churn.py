from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.churn import ChurnInputs, churn_loss, period_churn, risk
from app.domain.complaints import ComplaintRecord

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_worked_example_a_appliance_retailer() -> None:
    c = period_churn(at_start=3000, at_end=3300, new=500)
    assert c.lost == 200
    assert round(c.rate * 100, 2) == 6.06
    revenue_lost = 100 * Decimal(100_000) + 100 * Decimal(200_000)
    assert revenue_lost == Decimal(30_000_000)
    assert churn_loss(revenue_lost, Decimal("0.05")) == Decimal(1_500_000)


def test_worked_example_b_telecom() -> None:
    c = period_churn(at_start=300_000, at_end=320_000, new=50_000)
    assert c.lost == 30_000
    assert c.rate == pytest.approx(0.09375)
    assert churn_loss(30_000 * Decimal(1000), Decimal("0.03")) == Decimal(900_000)
    assert churn_loss(30_000 * Decimal(900), Decimal("0.03")) == Decimal(810_000)


def test_common_convention_divides_by_start() -> None:
    assert period_churn(3000, 3300, 500, divide_by="start").rate == pytest.approx(200 / 3000)


def complaint(severity: str, opened_h: float, resolved_h: float | None) -> ComplaintRecord:
    opened = NOW - timedelta(days=10) + timedelta(hours=opened_h)
    resolved = None if resolved_h is None else opened + timedelta(hours=resolved_h)
    return ComplaintRecord(
        complaint_id="k", category="service", severity=severity,  # type: ignore[arg-type]
        status="opened" if resolved is None else "resolved",
        status_at=resolved or opened, opened_at=opened, resolved_at=resolved,
    )  # fmt: skip


def inputs(**kw: object) -> ChurnInputs:
    base: dict[str, object] = dict(
        band=None, score=None, complaints=[], days_since_purchase=None,
        typical_gap_days=None, spend_decline=0.0, as_of=NOW,
    )  # fmt: skip
    base.update(kw)
    return ChurnInputs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("severity", "resolved_h", "expected", "reason"),
    [
        ("major", None, 0.81, "open_complaint"),  # 19% repurchase when not resolved
        ("minor", None, 0.54, "open_complaint"),  # 46%
        ("major", 48, 0.46, "slow_resolution"),  # 54% when resolved
        ("minor", 48, 0.26, "slow_resolution"),  # 74%
        ("major", 2, 0.18, None),  # 82% when resolved quickly
        ("minor", 2, 0.05, None),  # 95%
    ],
)
def test_complaint_signal_calibrated_on_repurchase_intention(
    severity: str, resolved_h: float | None, expected: float, reason: str | None
) -> None:
    score, reasons = risk(inputs(complaints=[complaint(severity, 0, resolved_h)]))
    assert score == pytest.approx(expected)
    assert reasons == ([reason] if reason else [])


def test_reasons_strongest_first() -> None:
    score, reasons = risk(
        inputs(band="detractor", score=0, complaints=[complaint("minor", 0, None)],
               days_since_purchase=60, typical_gap_days=20, spend_decline=0.5)
    )  # fmt: skip
    assert reasons == ["detractor", "open_complaint", "inactive", "spend_decline"]
    assert 0.9 < score < 1


def test_inactivity_is_against_own_rhythm() -> None:
    weekly, _ = risk(inputs(days_since_purchase=30, typical_gap_days=7))
    yearly, _ = risk(inputs(days_since_purchase=30, typical_gap_days=365))
    assert weekly > 0.5 and yearly == 0


band_st = st.sampled_from([None, "promoter", "passive", "detractor"])
complaint_st = st.builds(
    complaint, st.sampled_from(["minor", "major"]), st.floats(0, 100),
    st.one_of(st.none(), st.floats(0, 200)),
)  # fmt: skip


@given(
    band_st, st.integers(0, 10), st.lists(complaint_st, max_size=4),
    st.one_of(st.none(), st.floats(0, 400)), st.floats(0, 1), st.sampled_from(["minor", "major"]),
)  # fmt: skip
def test_unresolved_complaint_never_lowers_risk(
    band: str | None,
    score: int,
    cs: list[ComplaintRecord],
    days: float | None,
    decline: float,
    severity: str,
) -> None:
    base = inputs(band=band, score=score, complaints=cs, days_since_purchase=days,
                  typical_gap_days=30, spend_decline=decline)  # fmt: skip
    more = inputs(band=band, score=score, complaints=[*cs, complaint(severity, 0, None)],
                  days_since_purchase=days, typical_gap_days=30, spend_decline=decline)  # fmt: skip
    r0, r1 = risk(base)[0], risk(more)[0]
    assert 0 <= r0 <= r1 <= 1


@given(st.lists(complaint_st, max_size=3), st.sampled_from(["minor", "major"]), band_st)
def test_quick_resolution_lowers_risk(
    cs: list[ComplaintRecord], severity: str, band: str | None
) -> None:
    still_open = risk(inputs(band=band, score=3, complaints=[*cs, complaint(severity, 0, None)]))
    quick = risk(inputs(band=band, score=3, complaints=[*cs, complaint(severity, 0, 3)]))
    assert quick[0] < still_open[0]


@given(st.lists(complaint_st, max_size=3), st.integers(0, 6), st.integers(9, 10))
def test_promoter_lowers_risk_against_detractor(
    cs: list[ComplaintRecord], low: int, high: int
) -> None:
    detractor = risk(inputs(band="detractor", score=low, complaints=cs))[0]
    promoter = risk(inputs(band="promoter", score=high, complaints=cs))[0]
    assert promoter < detractor

"""Churn risk (features, MBG/NBD, the logistic fusion) and the churn KPIs of DOMAIN.md."""

import dataclasses
import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.analysis.backtest import auc, summarize
from app.analysis.fit import fit_logistic, fit_mbgnbd
from app.domain import churn_kpi
from app.domain.churn import (
    FEATURES,
    ChurnInputs,
    ChurnModel,
    Logistic,
    Rhythm,
    assess,
    churn_loss,
    features,
    load_model,
    period_churn,
)
from app.domain.complaints import ComplaintRecord
from app.streams.readmodel import Row

NOW = datetime(2026, 6, 1, tzinfo=UTC)
YEAR_START, YEAR_END = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)


# -- the period churn formula, and the worked examples as tests of the KPI feature ----------


def test_formula_worked_example_a_and_b() -> None:
    a = period_churn(at_start=3000, at_end=3300, new=500)
    assert (a.lost, round(a.rate * 100, 2)) == (200, 6.06)
    b = period_churn(at_start=300_000, at_end=320_000, new=50_000)
    assert (b.lost, b.rate) == (30_000, pytest.approx(0.09375))
    assert period_churn(3000, 3300, 500, divide_by="start").rate == pytest.approx(200 / 3000)


def row(first: datetime, lapsed: datetime | None = None, revenue: float = 0.0,
        won: datetime | None = None, tier: str = "C", region: str | None = None) -> Row:  # fmt: skip
    lapses = ((lapsed.timestamp(), revenue, won.timestamp() if won else None),) if lapsed else ()
    return Row(0, "c", 0.0, tier == "A", tier, 0.0, first.timestamp(), lapsed is not None,
               lapses, (None, region, None, None), None)  # fmt: skip


def base(start: int, new: int, lost: list[float]) -> list[Row]:
    """``start`` customers known before the year, ``new`` joining in it, ``lost`` lapsing in it."""
    old = YEAR_START - timedelta(days=30)
    joined = YEAR_START + timedelta(days=100)
    lapsed = YEAR_START + timedelta(days=200)
    rows = [row(old, lapsed, rev) for rev in lost]
    rows += [row(old) for _ in range(start - len(lost))]
    rows += [row(joined) for _ in range(new)]
    return rows


def year_report(rows: list[Row], margin: str) -> churn_kpi.PeriodRow:
    counts = churn_kpi.count(rows, "year", YEAR_END - timedelta(days=1), periods=1)
    report = churn_kpi.report(counts, "year", YEAR_END - timedelta(days=1), 1, Decimal(margin),
                              {}, "overall")  # fmt: skip
    assert len(report) == 1
    return report[0]


def test_worked_example_a_appliance_retailer_through_the_kpis() -> None:
    # 3,000 outlets at the start, 500 new, 200 lost: half with 100,000 a year, half 200,000.
    r = year_report(base(3000, 500, [100_000.0] * 100 + [200_000.0] * 100), "0.05")
    assert (r.customers_at_start, r.new, r.lost, r.customers_at_end) == (3000, 500, 200, 3300)
    assert round(r.churn_rate * 100, 2) == 6.06  # type: ignore[operator]
    assert r.churn_rate_start == pytest.approx(200 / 3000)
    assert r.revenue_lost == Decimal("30000000") and r.churn_loss == Decimal("1500000.00")


def test_worked_example_b_telecom_through_the_kpis() -> None:
    # 300,000 subscribers, 50,000 new, 30,000 lost, valued at last year's 1,000 a year.
    r = year_report(base(300_000, 50_000, [1000.0] * 30_000), "0.03")
    assert (r.customers_at_start, r.new, r.lost, r.customers_at_end) == (300_000, 50_000,
                                                                           30_000, 320_000)
    assert r.churn_rate == pytest.approx(0.09375)
    assert r.revenue_lost == Decimal("30000000") and r.churn_loss == Decimal("900000.00")


def test_won_back_customers_return_to_the_base_and_are_counted() -> None:
    jan, feb, mar = (datetime(2026, m, 10, tzinfo=UTC) for m in (1, 2, 3))
    rows = [row(jan - timedelta(days=60), feb, 100.0, won=mar), row(jan - timedelta(days=60))]
    counts = churn_kpi.count(rows, "month", datetime(2026, 3, 20, tzinfo=UTC), periods=2)
    report = churn_kpi.report(counts, "month", datetime(2026, 3, 20, tzinfo=UTC), 2,
                              Decimal("0.1"), {}, "overall")  # fmt: skip
    feb_row, mar_row = report
    assert (feb_row.period, feb_row.customers_at_start, feb_row.lost, feb_row.customers_at_end) \
        == ("2026-02", 2, 1, 1)  # fmt: skip
    assert (mar_row.won_back, mar_row.customers_at_end, mar_row.lost) == (1, 2, 0)
    assert feb_row.churn_rate == 1.0 and mar_row.change == -1.0


def test_tiers_segments_safety_line_and_change() -> None:
    as_of = datetime(2026, 5, 15, tzinfo=UTC)
    apr = datetime(2026, 4, 10, tzinfo=UTC)
    old = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [row(old, tier="A", region="eu") for _ in range(98)]
    rows += [row(old, apr, 5000.0, tier="A", region="eu") for _ in range(2)]
    rows += [row(old, tier="C", region="us") for _ in range(100)]
    counts = churn_kpi.count(rows, "month", as_of, periods=2)
    lines = {"A": 0.10, "overall": 0.5}
    report = {(r.period, r.group): r for r in churn_kpi.report(
        counts, "month", as_of, 2, Decimal("0.05"), lines)}  # fmt: skip
    a_apr = report[("2026-04", "tier:A")]
    assert (a_apr.lost, a_apr.customers_at_end) == (2, 98)
    monthly_line = 1 - 0.9 ** (30 / 365)
    assert a_apr.safety_line == pytest.approx(monthly_line) and a_apr.above_safety_line
    assert not report[("2026-04", "overall")].above_safety_line
    assert report[("2026-04", "region:eu")].lost == 2 and report[("2026-04", "tier:C")].lost == 0
    assert report[("2026-05", "tier:A")].change == pytest.approx(-2 / 98)
    assert report[("2026-04", "region:eu")].safety_line is None, "lines are per tier"
    # Additive: two halves merged give the same counts as the whole.
    halves = [churn_kpi.count(rows[::2], "month", as_of, 2),
              churn_kpi.count(rows[1::2], "month", as_of, 2)]  # fmt: skip
    assert churn_kpi.merge(halves) == counts


def reference_count(rows: list[Row], kind: churn_kpi.Period, as_of: datetime, periods: int
                    ) -> churn_kpi.Counts:  # fmt: skip
    """The KPI definitions applied customer by customer and period by period, no shortcut."""
    out: churn_kpi.Counts = {}
    for c in rows:
        for label, s, e in churn_kpi.bounds(kind, as_of, periods):
            start, end = s.timestamp(), e.timestamp()

            def active(at: float, c: Row = c) -> bool:
                return c.first_seen < at and not any(
                    lapsed < at and (won is None or won >= at) for lapsed, _, won in c.lapses)

            r = [float(active(start)), float(start <= c.first_seen < end),
                 float(sum(start <= lapsed < end for lapsed, _, _ in c.lapses)),
                 float(sum(won is not None and start <= won < end for _, _, won in c.lapses)),
                 float(active(end)),
                 sum(rev for lapsed, rev, _ in c.lapses if start <= lapsed < end)]  # fmt: skip
            if any(r):
                for g in churn_kpi.groups(c.tier, c.segment):
                    acc = out.setdefault((label, g), [0.0] * 6)
                    for i, v in enumerate(r):
                        acc[i] += v
    return out


KPI_AS_OF = datetime(2026, 5, 15, tzinfo=UTC)
# days before KPI_AS_OF: inside the periods, before them, on a month's first instant, after
KPI_DAYS = st.one_of(st.integers(-40, 700), st.sampled_from([0, 14, 44, 45, 135, 500]))


@st.composite
def kpi_rows(draw: st.DrawFn) -> list[Row]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        first = KPI_AS_OF - timedelta(days=draw(KPI_DAYS))
        lapsed = won = None
        if draw(st.booleans()):
            lapsed = first + timedelta(days=draw(st.integers(1, 300)))
            if draw(st.booleans()):
                won = lapsed + timedelta(days=draw(st.integers(1, 200)))
        if first.day == 15 and draw(st.booleans()):
            first = first.replace(day=1, hour=0)  # exactly on a period's start
        out.append(row(first, lapsed, draw(st.sampled_from([0.0, 120.5])), won,
                       draw(st.sampled_from("ABC")), draw(st.sampled_from([None, "eu"]))))
    return out


@given(kpi_rows(), st.sampled_from(churn_kpi.PERIODS), st.integers(0, 5))
def test_counts_equal_the_definitions_applied_customer_by_customer(
    rows: list[Row], kind: churn_kpi.Period, periods: int
) -> None:
    assert churn_kpi.count(rows, kind, KPI_AS_OF, periods) == reference_count(
        rows, kind, KPI_AS_OF, periods)


@given(kpi_rows(), kpi_rows(), st.sampled_from(churn_kpi.PERIODS))
def test_customers_taken_out_of_the_tally_leave_it_as_if_never_added(
    kept: list[Row], gone: list[Row], kind: churn_kpi.Period
) -> None:
    tally = churn_kpi.Tally()
    for r in gone + kept:
        tally.add(3, r)
    for r in gone:
        tally.add(3, r, sign=-1)
    assert tally.counts(3, kind, KPI_AS_OF, 5) == reference_count(kept, kind, KPI_AS_OF, 5)
    assert tally.counts(4, kind, KPI_AS_OF, 5) == {}, "another partition counts nothing"


@given(kpi_rows(), kpi_rows(), st.sampled_from(churn_kpi.PERIODS))
def test_moving_customers_to_a_new_lifecycle_counts_as_the_new_rows_do(
    old: list[Row], new: list[Row], kind: churn_kpi.Period
) -> None:
    """``move`` touches only the cells that differ: it must end where taking each old row
    out and putting its new one in does (the reference definitions of the new rows).
    Pairs share a tier now and then, so a move within the same groups is drawn too."""
    pairs = list(zip(old, new, strict=False))
    same_groups = [(a, dataclasses.replace(b, tier=a.tier, segment=a.segment)) for a, b in pairs]
    tally = churn_kpi.Tally()
    for a, _ in pairs + same_groups:
        tally.add(3, a)
    for a, b in pairs + same_groups:
        tally.move(3, a, b)
    moved = [b for _, b in pairs + same_groups]
    assert tally.counts(3, kind, KPI_AS_OF, 5) == reference_count(moved, kind, KPI_AS_OF, 5)


def test_a_lapse_stamped_before_first_sighting_counts_as_the_definitions_say() -> None:
    # Stream time can be behind a customer's own newest events (a topic read ahead), so a
    # lapse can carry an earlier time than a late event that moved first sighting back.
    odd = [row(datetime(2026, 4, 20, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC), 80.0),
           row(datetime(2026, 5, 2, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), 10.0,
               won=datetime(2026, 4, 3, tzinfo=UTC))]  # fmt: skip
    for kind in churn_kpi.PERIODS:
        assert churn_kpi.count(odd, kind, KPI_AS_OF, 5) == reference_count(odd, kind, KPI_AS_OF, 5)


def test_a_customer_first_seen_within_the_periods_is_new_once_then_in_the_base() -> None:
    as_of = datetime(2026, 5, 15, tzinfo=UTC)
    counts = churn_kpi.count([row(datetime(2026, 4, 1, tzinfo=UTC))], "month", as_of, 3)
    assert ("2026-03", "overall") not in counts  # not a customer yet
    assert counts[("2026-04", "overall")] == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert counts[("2026-05", "overall")] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_churn_loss() -> None:
    assert churn_loss(Decimal("30000000"), Decimal("0.03")) == Decimal("900000.00")


# -- MBG/NBD ----------------------------------------------------------------------------


@given(st.integers(0, 50), st.floats(0, 300), st.floats(1, 200))
def test_p_alive_falls_with_silence_and_rises_with_recency(x: int, t_x: float, gap: float) -> None:
    m = Rhythm(1.2, 20.0, 0.4, 4.0)
    age = t_x + gap
    p = m.p_alive(x, t_x, age)
    assert 0 <= p <= 1
    assert m.p_alive(x, t_x, age + 30) <= p  # longer silence
    assert m.p_alive(x, min(age, t_x + 10), age) >= p  # a more recent last purchase


def synthetic_mbgnbd(m: Rhythm, n: int, horizon: float, seed: int) -> list[tuple[int, float, float]]:
    """Customers drawn from the MBG/NBD story itself: gamma rates, beta drop-out."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        lam = rnd.gammavariate(m.r, 1 / m.alpha)
        p = rnd.betavariate(m.a, m.b)
        t, last, x = 0.0, 0.0, 0
        alive = rnd.random() >= p  # MBG/NBD: may drop out right after the first purchase
        while alive:
            t += rnd.expovariate(lam)
            if t > horizon:
                break
            x, last = x + 1, t
            alive = rnd.random() >= p
        out.append((x, last, horizon))
    return out


def test_mbgnbd_fit_recovers_the_population_it_was_drawn_from() -> None:
    truth = Rhythm(r=2.0, alpha=40.0, a=0.8, b=6.0)
    fitted = fit_mbgnbd(synthetic_mbgnbd(truth, 6000, 365.0, seed=3))
    assert fitted is not None
    assert fitted.r / fitted.alpha == pytest.approx(truth.r / truth.alpha, rel=0.1)
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(truth.a / (truth.a + truth.b), rel=0.25)
    assert fit_mbgnbd([(1, 2.0, 10.0)] * 10) is None, "too few customers to fit"


def test_logistic_fit_recovers_weights_and_auc_ranks() -> None:
    rnd = np.random.default_rng(5)
    names = list(FEATURES)
    X = rnd.uniform(0, 1, size=(20000, len(names)))
    true = {n: 0.0 for n in names} | {"detractor": 2.0, "overdue": -1.0}
    z = -1.0 + X @ np.array([true[n] for n in names])
    y = rnd.uniform(size=len(z)) < 1 / (1 + np.exp(-z))
    intercept, weights = fit_logistic([dict(zip(names, r, strict=True)) for r in X], list(y), 1e-6)
    assert intercept == pytest.approx(-1.0, abs=0.15)
    assert weights["detractor"] == pytest.approx(2.0, abs=0.15)
    assert weights["overdue"] == pytest.approx(-1.0, abs=0.15)
    assert abs(weights["passive"]) < 0.15


def test_auc_and_brier_on_known_cases() -> None:
    labels = np.array([True, True, False, False])
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    s = summarize(np.array([1.0, 1.0, 0.0, 0.0]), labels)
    assert (s["brier"], s["brier_base_rate"], s["precision_top10"]) == (0.0, 0.25, 1.0)


# -- scoring ----------------------------------------------------------------------------


def complaint(severity: str, opened_h: float, resolved_h: float | None) -> ComplaintRecord:
    opened = NOW - timedelta(days=10) + timedelta(hours=opened_h)
    resolved = None if resolved_h is None else opened + timedelta(hours=resolved_h)
    return ComplaintRecord(
        complaint_id="k", category="service", severity=severity,  # type: ignore[arg-type]
        status="opened" if resolved is None else "resolved",
        status_at=resolved or opened, opened_at=opened, resolved_at=resolved,
    )  # fmt: skip


def buys(days: list[float], amount: float = 100.0) -> list[tuple[datetime, float]]:
    return [(NOW - timedelta(days=d), amount) for d in sorted(days, reverse=True)]


@pytest.mark.parametrize(
    ("complaints", "feature", "value"),
    [
        ([complaint("major", 0, None)], "no_reply_24h", 1.5),  # open 10 days: past 24 h
        ([complaint("minor", 0, 48)], "slow_resolution", 1.0),
        ([complaint("minor", 0, 3)], "quick_resolution", 1.0),
    ],
)
def test_complaint_features(complaints: list[ComplaintRecord], feature: str, value: float) -> None:
    f = features(ChurnInputs(buys([30, 20, 10]), [], complaints), NOW, Rhythm())
    assert f[feature] == value
    assert sum(1 for k in ("no_reply_24h", "slow_resolution", "quick_resolution") if f[k]) == 1


def test_open_complaint_inside_the_standard_then_past_it() -> None:
    c = complaint("minor", 0, None)
    opened = c.opened_at
    assert opened is not None
    inp = ChurnInputs(buys([30, 20, 10]), [], [c])
    assert features(inp, opened + timedelta(hours=2), Rhythm())["open_complaint"] == 1.0
    assert features(inp, opened + timedelta(hours=25), Rhythm())["no_reply_24h"] == 1.0


def test_scores_and_rhythm_features() -> None:
    regular = buys([70, 60, 50, 40, 30, 20, 10, 0])
    fading = buys([130, 120, 110, 100, 90, 60]) + buys([0], amount=30.0)  # gaps 10 x4, 30, 60
    f = features(ChurnInputs(regular, [(NOW - timedelta(days=5), 3)], []), NOW, Rhythm())
    assert f["detractor"] == pytest.approx(4 / 7) and f["overdue"] == 0.0
    g = features(ChurnInputs(fading, [(NOW - timedelta(days=40), 9), (NOW, 6)], []), NOW, Rhythm())
    assert g["gap_stretch"] == pytest.approx(math.log(60 / 10))
    assert g["basket_shrink"] == pytest.approx(1 - (100 + 30) / 2 / 100)
    assert g["falling_score"] == pytest.approx(0.3) and g["detractor"] == pytest.approx(1 / 7)
    stale = features(ChurnInputs(regular, [(NOW - timedelta(days=200), 0)], []), NOW, Rhythm())
    assert stale["detractor"] == 0.0, "answers older than 180 days no longer count"


def test_reasons_strongest_first_and_only_above_the_minimum() -> None:
    model = ChurnModel(churn=Logistic(-3.0, {"detractor": 2.0, "overdue": 1.0,
                                             "spend_decline": 0.1}))  # fmt: skip
    inp = ChurnInputs(buys([200, 190, 180, 170, 160]), [(NOW - timedelta(days=1), 0)], [])
    a = assess(inp, NOW, model)
    f = features(inp, NOW, model.rhythm)
    z = -3.0 + 2.0 * f["detractor"] + 1.0 * f["overdue"] + 0.1 * f["spend_decline"]
    assert a.risk == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-6)
    assert a.reasons == (["detractor", "inactive"] if 2.0 * f["detractor"] > f["overdue"]
                         else ["inactive", "detractor"])  # fmt: skip
    assert "spend_decline" not in a.reasons, "0.1 x 1.0 is below reason_min"


def test_model_file_round_trips_and_rejects_unknown_features() -> None:
    shipped = load_model()
    assert shipped.gone is not None and shipped.horizon_days == 90 and shipped.trained_on
    assert ChurnModel.from_dict(shipped.to_dict()) == shipped
    bad: dict[str, Any] = shipped.to_dict()
    bad["churn"]["weights"]["shoe_size"] = 1.0
    with pytest.raises(ValueError, match="shoe_size"):
        ChurnModel.from_dict(bad)


def test_one_pass_scoring_equals_log_odds_whatever_order_the_weights_are_listed_in() -> None:
    """assess sums the features in one pass when the weights are in FEATURES order (the
    shipped model's are); a model file listing them otherwise takes log_odds' path."""
    shipped = load_model()
    assert shipped.gone is not None
    assert shipped.churn.in_feature_order and shipped.gone.in_feature_order
    data: dict[str, Any] = shipped.to_dict()
    for part in ("churn", "gone"):
        data[part]["weights"] = dict(reversed(list(data[part]["weights"].items())))
    listed_otherwise = ChurnModel.from_dict(data)
    assert listed_otherwise.gone is not None and not listed_otherwise.churn.in_feature_order
    rng = random.Random(7)
    for _ in range(300):
        days = [rng.uniform(0, 400) for _ in range(rng.randint(0, 8))]
        scores = [(NOW - timedelta(days=rng.uniform(0, 200)), rng.randint(0, 10))
                  for _ in range(rng.randint(0, 2))]  # fmt: skip
        inp = ChurnInputs(buys(days, rng.uniform(-20, 300)), sorted(scores),
                          [complaint(rng.choice(["minor", "major"]), 0, None)] * rng.randint(0, 1))  # fmt: skip
        fast, general = assess(inp, NOW, shipped), assess(inp, NOW, listed_otherwise)
        f = features(inp, NOW, shipped.rhythm)
        z = shipped.churn.log_odds(f)
        assert fast.risk == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-6)
        assert fast.risk == pytest.approx(general.risk, abs=1.1e-6)
        assert fast.p_alive == pytest.approx(general.p_alive, abs=1.1e-6)
        assert fast.reasons == general.reasons

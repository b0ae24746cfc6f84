from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from msgspec import to_builtins

from app.domain import churn
from app.domain.customer import (
    CustomerState,
    Outcome,
    Policy,
    apply,
    churn_inputs,
    fold,
    next_check,
    refresh,
)
from app.domain.events import AnyEvent
from app.domain.value import RevenueCutoffs, ValuePolicy
from app.errors import InvalidEventError

from .factory import at, complaint, purchase, survey

POLICY = Policy(
    fx_rates={"EUR": Decimal("1"), "USD": Decimal("0.5")},
    value_policy=ValuePolicy(revenue_threshold=Decimal("1000"), top_share=0.0),
)


def run(events: list[AnyEvent], policy: Policy = POLICY) -> CustomerState:
    state: CustomerState | None = None
    for e in events:
        state, _ = apply(state, e, policy)
    assert state is not None
    return state


def test_band_follows_newest_response_by_event_time() -> None:
    s = run([survey(9, day=5), survey(3, day=1)])
    assert (s.score, s.band) == (9, "promoter")
    assert s.previous_band == "detractor"  # the response before the newest, by time


def test_equal_timestamps_later_arrival_wins() -> None:
    assert run([survey(9, day=1), survey(4, day=1)]).band == "detractor"
    assert run([survey(4, day=1), survey(9, day=1)]).band == "promoter"


def test_late_response_counts_in_rolling_nps_but_not_band() -> None:
    a, b = survey(10, day=10, respondent_id="a"), survey(0, day=2, respondent_id="b")
    state, outcome = apply(run([a]), b, POLICY)
    assert outcome is Outcome.LATE
    assert state.band == "promoter"
    assert state.rolling_nps == 0.0


def test_rolling_nps_newest_per_respondent_within_90_days() -> None:
    s = run(
        [
            survey(2, day=0, respondent_id="a"),  # superseded by a's newer answer
            survey(10, day=50, respondent_id="a"),
            survey(9, day=60, respondent_id="b"),
            survey(7, day=70, respondent_id="c"),
            survey(0, day=5, respondent_id="d"),  # older than 90 days before day 100
            survey(3, day=100, respondent_id="e"),
        ]
    )
    # a=10, b=9, c=7, e=3 -> 2 promoters, 1 detractor of 4 -> 25
    assert s.rolling_nps == 25.0


def test_account_without_respondent_counts_as_one() -> None:
    assert run([survey(0, day=1), survey(10, day=2)]).rolling_nps == 100.0


def test_trailing_revenue_365_days_with_refunds_and_fx() -> None:
    s = run(
        [
            purchase(500, day=0),  # falls out of the window at day 400
            purchase(300, day=100),
            purchase(-100, day=200),
            purchase(400, day=390, currency="USD"),  # 200 EUR
            survey(8, day=400),
        ]
    )
    assert s.trailing_revenue == Decimal("400")


def test_unknown_currency_is_invalid_and_changes_nothing() -> None:
    before = run([purchase(10)])
    snapshot = to_builtins(before)
    with pytest.raises(InvalidEventError) as info:
        apply(before, purchase(10, currency="XYZ"), POLICY)
    assert info.value.reason == "unknown_currency"
    assert to_builtins(before) == snapshot
    # fold() works in place: it must refuse before touching anything, too.
    with pytest.raises(InvalidEventError):
        fold(before, purchase(10, currency="XYZ"), POLICY)
    assert to_builtins(before) == snapshot


def test_duplicate_event_id_has_no_effect() -> None:
    p = purchase(700, day=1)
    once = run([p])
    twice, outcome = apply(once, p, POLICY)
    assert outcome is Outcome.DUPLICATE
    assert twice == once


def test_dedup_memory_is_bounded() -> None:
    policy = Policy(dedup_event_ids=3)
    s = run([purchase(1, day=i) for i in range(10)], policy)
    assert len(s.recent_event_ids) == 3


@pytest.mark.parametrize(
    ("revenue", "member", "cutoffs", "high", "tier"),
    [
        ("1000", None, RevenueCutoffs(), True, "A"),  # threshold
        ("999", None, RevenueCutoffs(), False, "C"),
        ("10", "gold", RevenueCutoffs(), True, "A"),  # listed membership tier
        ("600", None, RevenueCutoffs(a=500, b=100), True, "A"),  # top share
        ("200", None, RevenueCutoffs(a=500, b=100), False, "B"),
        ("50", None, RevenueCutoffs(a=500, b=100), False, "C"),
    ],
)
def test_high_value_and_tier(
    revenue: str, member: str | None, cutoffs: RevenueCutoffs, high: bool, tier: str
) -> None:
    policy = Policy(
        value_policy=ValuePolicy(Decimal("1000"), 0.2, frozenset({"gold"})), cutoffs=cutoffs
    )
    seg = {"tier": member} if member else None
    s = run([purchase(revenue, segment=seg)], policy)
    assert (s.high_value, s.value_tier) == (high, tier)


def test_complaint_lifecycle_age_resolution_and_breach() -> None:
    s = run(
        [
            complaint("k1", "opened", day=0),
            complaint("k1", "resolved", day=0, hours=30),  # 30 h: breach of the 24 h standard
            complaint("k2", "opened", day=1),
            complaint("k2", "escalated", day=1, hours=2),
            complaint("k3", "resolved", day=2, hours=5),  # out of order: resolved first
            complaint("k3", "opened", day=2, hours=1),
        ]
    )
    assert s.open_complaints == 1
    k1, k2, k3 = s.complaints["k1"], s.complaints["k2"], s.complaints["k3"]
    assert k1.resolution_time() == timedelta(hours=30)
    assert k3.resolution_time() == timedelta(hours=4) and not k3.is_open
    assert k2.status == "escalated" and k2.is_open
    assert s.sla_breaches == 2  # k1 resolved late, k2 open for more than 24 h at day 2
    f = churn.features(churn_inputs(s), s.last_event_at, POLICY.churn_model.rhythm)  # type: ignore[arg-type]
    assert (f["no_reply_24h"], f["slow_resolution"], f["quick_resolution"]) == (1.5, 1.0, 1.0)


def test_inactivity_and_spend_decline_reasons() -> None:
    events: list[AnyEvent] = [purchase(100, day=d) for d in range(0, 180, 10)]
    events += [purchase(10, day=185), survey(8, day=300)]
    s = run(events)
    assert s.typical_gap_days == pytest.approx(10)
    assert "inactive" in s.churn_reasons
    assert "spend_decline" in s.churn_reasons  # nothing in days 210-300 against 610 before
    steady = run([purchase(100, day=d) for d in range(0, 300, 10)])
    assert "spend_decline" not in steady.churn_reasons and steady.churn_risk < s.churn_risk


# Property: only the order within one timestamp matters; replaying a duplicate changes nothing.
event_st = st.one_of(
    st.builds(lambda sc, d, r: survey(sc, day=d, respondent_id=r), st.integers(0, 10),
              st.integers(0, 200), st.sampled_from([None, "a", "b"])),
    st.builds(lambda a, d: purchase(a, day=d), st.integers(-50, 500), st.integers(0, 400)),
    st.builds(lambda k, s, d, sev: complaint(k, s, day=d, severity=sev),
              st.sampled_from(["k1", "k2"]), st.sampled_from(["opened", "resolved", "escalated"]),
              st.integers(0, 300), st.sampled_from(["minor", "major"])),
)  # fmt: skip

SEMANTIC = {
    "band", "score", "score_at", "previous_band", "previous_score", "rolling_nps",
    "trailing_revenue", "purchase_count", "first_purchase_at", "last_purchase_at",
    "typical_gap_days", "high_value", "value_tier", "open_complaints", "sla_breaches",
    "churn_risk", "churn_reasons", "last_event_at", "response_count",
}  # fmt: skip


def _distinct_times(events: list[AnyEvent]) -> list[AnyEvent]:
    seen, out = set(), []
    for e in events:
        key = (e.event_type, e.occurred_at)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=25), st.randoms(use_true_random=False))
def test_order_of_distinct_timestamps_does_not_matter(events: list[AnyEvent], rnd: object) -> None:
    events = _distinct_times(events)
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = {k: v for k, v in to_builtins(run(events)).items() if k in SEMANTIC}
    b = {k: v for k, v in to_builtins(run(shuffled)).items() if k in SEMANTIC}
    assert a == b


@settings(max_examples=150, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=25), st.data())
def test_replaying_a_duplicate_changes_nothing(events: list[AnyEvent], data: st.DataObject) -> None:
    state = run(events)
    again = data.draw(st.sampled_from(events))
    replayed, outcome = apply(state, again, POLICY)
    assert outcome is Outcome.DUPLICATE
    assert replayed == state


@given(st.lists(event_st, min_size=1, max_size=25))
def test_invariants(events: list[AnyEvent]) -> None:
    s = run(events)
    assert s.rolling_nps is None or -100 <= s.rolling_nps <= 100
    assert 0 <= s.churn_risk <= 1
    assert s.p_alive is not None and 0 <= s.p_alive <= 1
    assert s.last_event_at == max(e.occurred_at for e in events)
    assert s.first_seen_at == min(e.occurred_at for e in events)


def test_state_written_before_churn_as_of_now_still_loads() -> None:
    raw = (Path(__file__).parent / "data" / "state_v0_1.json").read_text()
    old = msgspec.json.decode(raw, type=CustomerState)
    assert old.lapsed_at is None and old.churn_as_of is None and old.first_seen_at is None
    assert old.trailing_revenue == Decimal("190.50") and old.band == "detractor"
    refresh(old, POLICY, at(60))
    assert old.churn_as_of == at(60) and old.p_alive is not None
    more, outcome = apply(old, purchase(10, day=61), POLICY)
    assert outcome is Outcome.PROCESSED and more.purchase_count == old.purchase_count + 1


def test_risk_grows_while_a_customer_is_silent() -> None:
    s = run([purchase(100, day=d) for d in range(0, 120, 10)])
    risks, alive = [], []
    for day in (115, 130, 160, 220, 300):
        refresh(s, POLICY, at(day))
        risks.append(s.churn_risk)
        alive.append(s.p_alive)
    assert risks == sorted(risks) and risks[-1] > 3 * risks[0]
    assert alive == sorted(alive, reverse=True)
    first_below = next(d for d, p in zip((115, 130, 160, 220, 300), alive, strict=True) if p < 0.5)
    assert alive[0] > 0.5 and s.lapsed_at == at(first_below), "lapsed when first seen below"
    assert s.churn_as_of == at(300)
    assert "inactive" in s.churn_reasons
    assert len(s.lapses) == 1 and s.lapses[0].revenue == Decimal("1200")


def test_open_complaint_breaches_as_of_now_without_another_event() -> None:
    s = run([purchase(100, day=0), complaint("k1", "opened", day=1)])
    assert s.sla_breaches == 0
    refresh(s, POLICY, at(8))  # a week later, no event since
    assert s.sla_breaches == 1
    f = churn.features(churn_inputs(s), at(8), POLICY.churn_model.rhythm)
    assert f["no_reply_24h"] == 1.5 and f["open_complaint"] == 0  # a major one, past 24 h


def test_late_purchase_withdraws_a_lapse_it_disproves() -> None:
    s = run([purchase(100, day=d) for d in range(0, 120, 10)])
    refresh(s, POLICY, at(300))
    assert s.lapsed_at is not None
    s, _ = apply(s, purchase(100, day=290), POLICY)  # happened before the lapse was seen
    refresh(s, POLICY, at(300))
    assert s.lapsed_at is None and s.lapses == [] and s.won_back == 0


def test_next_check_at_the_reply_standard_or_half_the_rhythm() -> None:
    s = run([purchase(100, day=d) for d in range(0, 100, 10)])
    assert next_check(s, POLICY, at(95)) == at(100)  # half of the 10-day gap
    s = run([purchase(100, day=d) for d in range(0, 100, 10)] + [complaint("k", "opened", 95)])
    assert next_check(s, POLICY, at(95)) == at(96) + timedelta(seconds=1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(-500, 5000)), max_size=30),
       st.integers(-10, 1100))  # fmt: skip
@example([(0, 100), (365, 200), (366, 400)], 365)  # on both edges: 365 days back is out
def test_revenue_at_is_the_sum_over_the_trailing_365_days(
    bought: list[tuple[int, int]], as_of_day: int
) -> None:
    """The bisection finds the window the formula states: as_of - 365 d < at <= as_of."""
    from app.domain.customer import PurchaseRecord

    records = sorted((PurchaseRecord(at=at(d), amount=Decimal(c) / 100, order_id=f"o{i}")
                      for i, (d, c) in enumerate(bought)), key=lambda p: p.at)  # fmt: skip
    state = CustomerState(customer_id="c1", purchases=records)
    for as_of in [at(as_of_day)] + [p.at for p in records[-1:]]:
        expected = sum((p.amount for p in records
                        if as_of - timedelta(days=365) < p.at <= as_of), Decimal("0"))  # fmt: skip
        assert state.revenue_at(as_of) == expected

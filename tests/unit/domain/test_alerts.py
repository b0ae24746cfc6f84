import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from msgspec import to_builtins

from app.domain.alerts import Snapshot, alert_id, evaluate, evaluate_time
from app.domain.customer import CustomerState, Outcome, Policy, apply, apply_action, refresh
from app.domain.events import Alert, AlertAction, AnyEvent
from app.domain.value import ValuePolicy
from app.errors import InvalidEventError

from .factory import at, complaint, purchase, survey

NOW = datetime(2026, 11, 1, tzinfo=UTC)
SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
POLICY = Policy(value_policy=ValuePolicy(revenue_threshold=Decimal("1000"), top_share=0.0))


def run(events: list[AnyEvent], policy: Policy = POLICY) -> tuple[CustomerState, list[Alert]]:
    state: CustomerState | None = None
    alerts: list[Alert] = []
    for e in events:
        before = Snapshot.of(state)
        state, _ = apply(state, e, policy)
        alerts += evaluate(before, state, e, policy, NOW)
    assert state is not None
    return state, alerts


def test_high_value_promoter_turning_detractor_alerts_once_with_full_payload() -> None:
    trigger = survey(3, day=20, event_id="s2", segment={"region": "eu"})
    state, alerts = run(
        [purchase(1500, day=1), survey(9, day=10, event_id="s1"),
         complaint("k", "opened", day=15), trigger, survey(2, day=21)]
    )  # fmt: skip
    assert len(alerts) == 1
    a = alerts[0]
    assert a.alert_id == alert_id("detractor", "c1", "s2")
    assert (a.rule, a.rule_version, a.customer_id, a.trigger_event_id) == (
        "detractor",
        1,
        "c1",
        "s2",
    )
    assert (a.score, a.previous_band, a.previous_score) == (3, "promoter", 9)
    assert a.trailing_revenue == Decimal("1500") and a.value_tier == "A"
    assert a.open_complaints == 1
    assert "detractor" in a.churn_reasons and 0 < a.churn_risk < 1
    assert a.sla_due_at == trigger.occurred_at + timedelta(hours=24)
    assert a.occurred_at == trigger.occurred_at and a.emitted_at == NOW
    assert a.rolling_nps == -100.0


@pytest.mark.parametrize(
    ("scores", "expected_alerts"),
    [
        ([5], 1),  # no score yet -> detractor
        ([8, 6], 1),  # passive -> detractor
        ([9, 4, 3, 2], 1),  # stays detractor: no repeat
        ([9, 4, 8, 4], 1),  # left detractor for a day, case still open: no second page
        ([9, 10, 7], 0),
    ],
)
def test_one_alert_per_transition(scores: list[int], expected_alerts: int) -> None:
    events: list[AnyEvent] = [purchase(5000, day=0)]
    events += [survey(s, day=i + 1) for i, s in enumerate(scores)]
    assert len(run(events)[1]) == expected_alerts


def test_not_high_value_no_alert() -> None:
    assert run([purchase(999, day=0), survey(9, day=1), survey(2, day=2)])[1] == []


def test_revenue_is_judged_at_the_surveys_event_time() -> None:
    # The big purchase happened after the survey: at the survey's time revenue was low.
    _, alerts = run([purchase(5000, day=30), survey(2, day=10)])
    assert alerts == []


def test_late_detractor_response_does_not_alert() -> None:
    _, alerts = run([purchase(5000, day=0), survey(9, day=10), survey(1, day=5)])
    assert alerts == []


def test_membership_tier_makes_high_value() -> None:
    policy = Policy(value_policy=ValuePolicy(Decimal("1000"), 0.0, frozenset({"platinum"})))
    _, alerts = run([survey(9, day=1, segment={"tier": "platinum"}), survey(1, day=2)], policy)
    assert len(alerts) == 1 and alerts[0].trailing_revenue == 0


def test_cooldown_realerts_while_still_detractor() -> None:
    policy = Policy(value_policy=POLICY.value_policy, realert_after=timedelta(days=30))
    events: list[AnyEvent] = [purchase(5000, day=0), survey(2, day=1), survey(3, day=10),
                              survey(1, day=40)]  # fmt: skip
    _, alerts = run(events, policy)
    assert [a.score for a in alerts] == [2, 1]
    assert alerts[1].previous_band is None


def test_alert_id_deterministic_and_replay_identical() -> None:
    events: list[AnyEvent] = [purchase(5000, day=0), survey(9, day=1), survey(2, day=2)]
    _, first = run(events)
    _, second = run(events)
    assert first == second
    assert len({alert_id("detractor", "c1", "x"), alert_id("detractor", "c1", "y")}) == 2


def test_alert_serialises_to_the_schema() -> None:
    _, alerts = run([purchase(5000, day=0), survey(1, day=1)])
    raw = alerts[0].model_dump_json()
    assert Alert.model_validate_json(raw) == alerts[0]
    schema = json.loads((SCHEMAS / "alert.v1.json").read_text())
    body = json.loads(raw)
    assert set(body) == set(schema["properties"]), "every field is in the published schema"
    assert set(schema["required"]) <= set(body)
    assert body["rule"] in schema["properties"]["rule"]["enum"]


def test_late_purchase_before_the_survey_fires_the_pending_alert_once() -> None:
    trigger = survey(2, day=10, event_id="s-late")
    _, alerts = run([survey(9, day=5), trigger, purchase(5000, day=3), purchase(10, day=4)])
    assert [(a.trigger_event_id, a.previous_band) for a in alerts] == [("s-late", "promoter")]
    assert alerts[0].occurred_at == trigger.occurred_at
    assert alerts[0].alert_id == alert_id("detractor", "c1", "s-late")


def test_purchase_after_the_survey_does_not_make_it_high_value_then() -> None:
    _, alerts = run([survey(9, day=5), survey(2, day=10), purchase(5000, day=11)])
    assert alerts == []


@pytest.mark.parametrize("purchase_at", [0, 1, 2])
def test_same_alert_wherever_the_purchase_arrives_between_the_surveys(purchase_at: int) -> None:
    # Surveys share a topic partition, so they keep their order; the purchase comes
    # from another topic and may arrive before, between or after them.
    events: list[AnyEvent] = [survey(9, day=2, event_id="a"), survey(1, day=3, event_id="b")]
    events.insert(purchase_at, purchase(5000, day=1, event_id="p"))
    _, alerts = run(events)
    assert [a.alert_id for a in alerts] == [alert_id("detractor", "c1", "b")]
    assert alerts[0].previous_band == "promoter" and alerts[0].trailing_revenue == 5000


# The time-driven rules of a customer, without the escalation of their cases (tested apart).
TIMED = replace(POLICY, rules=frozenset({"detractor", "silent", "complaint_reply_overdue"}))


def timed(events: list[AnyEvent], then: datetime, policy: Policy = TIMED
          ) -> tuple[CustomerState, list[Alert]]:  # fmt: skip
    """Fold events, then let stream time reach ``then`` the way the sweep does."""
    state, _ = run(events, policy)
    refresh(state, policy, then)
    return state, evaluate_time(state, policy, then, NOW)


def test_complaint_past_the_reply_standard_alerts_once_for_high_value() -> None:
    opened = complaint("k9", "opened", day=1, event_id="open-k9")
    events: list[AnyEvent] = [purchase(5000, day=0), opened]
    state, early = timed(events, at(2) - timedelta(hours=1))  # 23 h: within the standard
    assert early == []
    state, alerts = timed(events, at(2, hours=1))
    assert [(a.rule, a.complaint_id, a.trigger_event_id) for a in alerts] == [
        ("complaint_reply_overdue", "k9", "open-k9")]
    a = alerts[0]
    assert a.alert_id == alert_id("complaint_reply_overdue", "c1", "open-k9")
    assert a.occurred_at == at(2) and a.sla_due_at == at(2)
    assert state.sla_breaches == 1 and state.reply_overdue_alerted == ["k9"]
    # Time passes further: the same complaint never alerts again.
    assert evaluate_time(state, TIMED, at(9), NOW) == []


def test_complaint_overdue_not_for_low_value_nor_when_resolved_in_time() -> None:
    low = [purchase(50, day=0), complaint("k1", "opened", day=1)]
    assert timed(low, at(5))[1] == []
    fixed = [purchase(5000, day=0), complaint("k1", "opened", day=1),
             complaint("k1", "resolved", day=1, hours=5)]  # fmt: skip
    assert timed(fixed, at(5))[1] == []


def test_silent_high_value_customer_alerts_once_per_lapse_and_rearms_when_won_back() -> None:
    events: list[AnyEvent] = [purchase(2000, day=d, event_id=f"p{d}") for d in range(0, 200, 10)]
    state, alerts = timed(events, at(200))
    assert alerts == [] and state.lapsed_at is None, "10 days after the last purchase: alive"
    state, alerts = timed(events, at(400))
    assert state.lapsed_at == at(400) and state.p_alive is not None and state.p_alive < 0.5
    assert [(a.rule, a.trigger_event_id) for a in alerts] == [("silent", "p190")]
    assert alerts[0].alert_id == alert_id("silent", "c1", "p190")
    assert alerts[0].p_alive == state.p_alive and alerts[0].occurred_at == at(400)
    assert evaluate_time(state, TIMED, at(420), NOW) == [], "once per episode"
    back, _ = apply(state, purchase(3000, day=421, event_id="p421"), TIMED)
    assert back.lapsed_at is None and back.won_back == 1
    assert back.lapses[-1].won_back_at == at(421)
    refresh(back, TIMED, at(600))
    again = evaluate_time(back, TIMED, at(600), NOW)
    assert [a.trigger_event_id for a in again] == ["p421"], "a new silence is a new episode"


def test_late_purchases_from_before_a_lapse_raise_no_second_silent_alert() -> None:
    """Purchases read after the lapse was seen, though they happened before it (a lagging
    topic): each moves the trigger, but the lapse is the same episode."""
    events: list[AnyEvent] = [purchase(2000, day=d, event_id=f"p{d}") for d in range(0, 100, 10)]
    state, alerts = timed(events, at(400))
    assert [a.trigger_event_id for a in alerts] == ["p90"] and state.lapsed_at == at(400)
    for day in (120, 150):
        state, _ = apply(state, purchase(2000, day=day, event_id=f"p{day}"), TIMED)
        refresh(state, TIMED, at(400))
        assert state.lapsed_at == at(400) and state.last_purchase_event_id == f"p{day}"
        assert evaluate_time(state, TIMED, at(400), NOW) == []


def test_period_above_the_safety_line_alerts_per_group_with_its_figures() -> None:
    from app.domain import churn_kpi
    from app.domain.alerts import period_alerts
    from app.streams.readmodel import Row

    as_of = datetime(2026, 5, 20, tzinfo=UTC)
    old = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    lapsed = datetime(2026, 5, 3, tzinfo=UTC).timestamp()

    def row(tier: str, lost: bool) -> Row:
        lapses = ((lapsed, 1000.0, None),) if lost else ()
        return Row(0, "c", 0.0, tier == "A", tier, 0.0, old, lost, lapses,
                   (None, None, None, None), None)  # fmt: skip

    rows = [row("A", i < 3) for i in range(50)] + [row("C", False) for _ in range(50)]
    counts = churn_kpi.count(rows, "month", as_of, 1)
    report = churn_kpi.report(counts, "month", as_of, 1, Decimal("0.05"),
                              {"A": 0.10, "overall": 0.9})  # fmt: skip
    alerts = period_alerts("month", report, as_of, "EUR", NOW)
    assert [a.trigger_event_id for a in alerts] == ["month:2026-05:tier:A"]
    a = alerts[0]
    assert (a.rule, a.customer_id, a.value_tier, a.score) == ("churn_safety_line", "*", "A", None)
    assert a.alert_id == alert_id("churn_safety_line", "*", "month:2026-05:tier:A")
    fig = a.churn_period
    assert fig is not None and (fig.lost, fig.customers_at_end) == (3, 47)
    assert fig.churn_rate == pytest.approx(3 / 47) and a.churn_risk == pytest.approx(3 / 47)
    assert a.trailing_revenue == Decimal("3000") and fig.churn_loss == Decimal("150.00")
    assert a.occurred_at == as_of
    assert Alert.model_validate_json(a.model_dump_json()) == a



def action(alert: str, what: str, day: float, eid: str | None = None) -> AlertAction:
    return AlertAction(event_type="alert_action", event_id=eid or f"a-{alert}-{what}-{day}",
                       alert_id=alert, customer_id="c1", action=what, actor="agent-7",
                       occurred_at=at(day), schema_version=1)  # type: ignore[arg-type]


def test_every_customer_alert_opens_a_case_that_crm_actions_move() -> None:
    state, alerts = run([purchase(5000, day=0), survey(9, day=1), survey(2, day=2, event_id="s")])
    (case,) = state.cases
    assert (case.alert_id, case.rule, case.status) == (alerts[0].alert_id, "detractor", "open")
    assert case.opened_at == at(2) and case.contact_due_at == at(3)
    apply_action(state, action(case.alert_id, "acknowledged", 2.1))
    apply_action(state, action(case.alert_id, "contacted", 2.5))
    apply_action(state, action(case.alert_id, "acknowledged", 2.2))  # late, older: kept, no effect
    assert (case.status, case.acknowledged_at, case.contacted_at) == ("contacted", at(2.1), at(2.5))
    assert case.actor == "agent-7" and not case.overdue(at(9))
    again = action(case.alert_id, "resolved", 3, eid="dup")
    assert apply_action(state, again) is Outcome.PROCESSED
    assert apply_action(state, again) is Outcome.DUPLICATE
    before = to_builtins(state)
    with pytest.raises(InvalidEventError) as info:
        apply_action(state, action("no-such-alert", "contacted", 3))
    assert info.value.reason == "unknown_alert" and to_builtins(state) == before


def test_case_not_contacted_in_time_escalates_once() -> None:
    state, alerts = run([purchase(5000, day=0), survey(2, day=1)])
    case = state.cases[0]
    refresh(state, POLICY, at(1.9))
    assert evaluate_time(state, POLICY, at(1.9), NOW) == []
    refresh(state, POLICY, at(2.5))
    (escalation,) = evaluate_time(state, POLICY, at(2.5), NOW)
    assert (escalation.rule, escalation.trigger_event_id) == ("case_contact_overdue", case.alert_id)
    assert escalation.alert_id == alert_id("case_contact_overdue", "c1", case.alert_id)
    assert escalation.occurred_at == at(2) and len(state.cases) == 1, "escalations open no case"
    assert evaluate_time(state, POLICY, at(5), NOW) == []
    contacted, _ = run([purchase(5000, day=0), survey(2, day=1)])
    apply_action(contacted, action(contacted.cases[0].alert_id, "contacted", 1.5))
    assert evaluate_time(contacted, POLICY, at(5), NOW) == []


def test_contacted_detractor_answering_passive_is_recovered() -> None:
    state, _ = run([purchase(5000, day=0), survey(2, day=1)])
    apply_action(state, action(state.cases[0].alert_id, "contacted", 2))
    state, _ = apply(state, survey(8, day=10), POLICY)
    assert state.recovered == 1 and state.cases[0].recovered_at == at(10)
    state, _ = apply(state, survey(10, day=11), POLICY)
    assert state.recovered == 1, "recovered once"
    uncontacted, _ = run([purchase(5000, day=0), survey(2, day=1), survey(9, day=10)])
    assert uncontacted.recovered == 0


def test_hysteresis_rearms_only_after_the_case_closes_and_time_out_of_detractor() -> None:
    state, first = run([purchase(5000, day=0), survey(2, day=1)])
    state, later = run_more(state, [survey(7, day=5), survey(3, day=6)])
    case = state.cases[0]
    assert later == [] and case.later_scores == [3], "open case: the answer joins it"
    apply_action(state, action(case.alert_id, "resolved", 7))
    state, later = run_more(state, [survey(8, day=8), survey(4, day=12)])
    assert later == [], "out of detractor 4 days < 14: not re-armed"
    state, later = run_more(state, [survey(9, day=13), survey(1, day=40)])
    assert [a.score for a in later] == [1], "resolved and 27 days out: a new episode alerts"
    assert len(state.cases) == 2


def run_more(state: CustomerState, events: list[AnyEvent]) -> tuple[CustomerState, list[Alert]]:
    alerts: list[Alert] = []
    for e in events:
        before = Snapshot.of(state)
        state, _ = apply(state, e, POLICY)
        alerts += evaluate(before, state, e, POLICY, NOW)
    return state, alerts

"""Alert rules: which state changes CRM must hear about, and the alert they get.

Rule ``detractor`` (version 1): a survey moves a high-value customer's band
into detractor from promoter, passive or no score. Exactly one alert per
transition; while the customer stays a detractor no further alert, unless a
re-alert cooldown is configured and has passed; leaving the detractor band
re-arms the rule.

Rules raised by time passing (``evaluate_time``, run by the sweep as stream
time advances), each once per episode with a deterministic ``alert_id``:

- ``silent`` (version 1): a high-value customer lapses (P(alive) below the
  lapse setting). The episode is the silence after its last purchase, which
  is the trigger; buying again (won back) ends it.
- ``complaint_reply_overdue`` (version 1): a high-value customer's complaint
  is still open 24 h after it was opened (the reply standard). Once per
  complaint; the trigger is the complaint's opening event.
- ``case_contact_overdue`` (version 1): an alert's case (app/domain/cases.py)
  was not contacted within the contact SLA. Once per case; the trigger is the
  case's ``alert_id``.

And one about a period, not a customer (``period_alerts``):

- ``churn_safety_line`` (version 1): the current month's or quarter's churn
  rate of a group (overall, tier A/B/C) is above its safety line. Once per
  (period, group); the trigger is ``<kind>:<period>:<group>``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from app.domain import cases, value
from app.domain.churn_kpi import PeriodRow
from app.domain.customer import CustomerState, Episode, Policy, refresh
from app.domain.events import (
    PERIOD_ALERT_CUSTOMER,
    Alert,
    AlertRule,
    AnyEvent,
    Band,
    ChurnPeriodFigures,
    SurveyResponse,
)

DETRACTOR_RULE_VERSION = 1
SILENT_RULE_VERSION = 1
REPLY_OVERDUE_RULE_VERSION = 1
SAFETY_LINE_RULE_VERSION = 1
CASE_OVERDUE_RULE_VERSION = 1
SAFETY_LINE_GROUPS = ("overall", "tier:A", "tier:B", "tier:C")
ALERT_NAMESPACE = uuid.UUID("6f1c8a52-3f0e-4d4b-9a57-0c2f6b1f9e11")
SLA = timedelta(hours=24)


@dataclass(frozen=True)
class Snapshot:
    """The part of a state that alert rules compare before and after an event."""

    band: Band | None
    score: int | None
    score_at: datetime | None

    @classmethod
    def of(cls, state: CustomerState | None) -> Snapshot:
        if state is None:
            return cls(None, None, None)
        return cls(state.band, state.score, state.score_at)


def alert_id(rule: str, customer_id: str, trigger_event_id: str) -> str:
    """Deterministic id: the same trigger always yields the same alert_id (uuid5)."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{rule}\x1f{customer_id}\x1f{trigger_event_id}"))


def evaluate(
    before: Snapshot, after: CustomerState, event: AnyEvent, policy: Policy, now: datetime
) -> list[Alert]:
    """Alerts that ``event`` (already folded into ``after``) raises; records them in ``after``.

    A survey that moves the band into detractor opens an episode. The episode
    alerts once, as soon as the customer is known to have been high-value at
    the survey's own event time: usually at once, or when a late purchase (or
    segment, or a new Pareto boundary) shows it. The alert always names the
    survey that caused the transition, so its ``alert_id`` does not depend on
    arrival order.

    Hysteresis: once an episode has alerted, a new low answer does not alert
    again while its case is open (the answer is added to the case), nor unless
    the band stayed out of detractor for ``policy.rearm_after`` first; so a
    customer answering 6-7-6 does not page CRM every week.
    """
    episode = after.detractor_episode
    if after.band != "detractor":
        if episode is not None and episode.alerted:
            if episode.left_at is None:
                episode.left_at = after.score_at
        else:
            after.detractor_episode = None
        return []
    if "detractor" not in policy.rules:
        return []
    newest = (
        isinstance(event, SurveyResponse)
        and after.score_at == event.occurred_at
        and after.score == event.score
        and after.score_history[-1].seq == after.seq
    )
    if newest and (before.band != "detractor" or episode is None):
        assert isinstance(event, SurveyResponse)
        if episode is not None and episode.alerted and _still_armed_off(after, episode,
                                                                        event, policy):
            return []
        episode = after.detractor_episode = Episode(
            trigger_event_id=event.event_id, at=event.occurred_at, score=after.score or 0,
            previous_band=before.band if before.band != "detractor" else None,
            previous_score=before.score,
        )  # fmt: skip
    if episode is None:
        return []
    if not episode.alerted:
        high, tier, revenue = _high_value(after, episode.at, policy)
        if not high:
            return []
        episode.alerted, episode.alerted_at = True, episode.at
        return [
            _alert(after, episode.trigger_event_id, episode.score, episode.at,
                   episode.previous_band, episode.previous_score, revenue, tier, policy, now)
        ]  # fmt: skip
    cooldown = policy.realert_after
    if not newest or cooldown is None or episode.alerted_at is None:
        return []
    assert isinstance(event, SurveyResponse)
    if event.occurred_at - episode.alerted_at < cooldown:
        return []
    high, tier, revenue = _high_value(after, event.occurred_at, policy)
    if not high:
        return []
    episode.alerted_at = event.occurred_at
    return [_alert(after, event.event_id, event.score, event.occurred_at, None,
                   before.score, revenue, tier, policy, now)]  # fmt: skip


def _still_armed_off(state: CustomerState, episode: Episode, event: SurveyResponse,
                     policy: Policy) -> bool:  # fmt: skip
    """The alerted episode goes on: its case is open, or the band came back too soon."""
    open_case = next((c for c in reversed(state.cases)
                      if c.rule == "detractor" and c.is_open), None)  # fmt: skip
    too_soon = episode.left_at is not None and event.occurred_at - episode.left_at < \
        policy.rearm_after  # fmt: skip
    if open_case is None and not too_soon:
        return False
    episode.left_at = None
    if open_case is not None:
        open_case.later_scores.append(event.score)
    return True


def _high_value(
    state: CustomerState, at: datetime, policy: Policy
) -> tuple[bool, value.Tier, Decimal]:
    revenue = state.revenue_at(at)
    member = state.segment.tier if state.segment else None
    high, tier = value.classify(revenue, member, policy.value_policy, policy.cutoffs)
    return high, tier, revenue


def _alert(
    state: CustomerState, trigger: str, score: int | None, at: datetime,
    previous_band: Band | None, previous_score: int | None, revenue: Decimal,
    tier: value.Tier, policy: Policy, now: datetime, rule: AlertRule = "detractor",
    version: int = DETRACTOR_RULE_VERSION, stream_now: datetime | None = None,
    complaint_id: str | None = None, sla_due: datetime | None = None,
) -> Alert:  # fmt: skip
    refresh(state, policy, stream_now)  # the alert carries figures as of what is known now
    if rule == "detractor":
        state.detractor_alerted_at = at
    state.alerts_sent += 1
    cases.open_case(state.cases, alert_id(rule, state.customer_id, trigger), rule, trigger, at,
                    policy.contact_sla)  # fmt: skip
    return Alert(
        alert_id=alert_id(rule, state.customer_id, trigger),
        rule=rule,
        rule_version=version,
        customer_id=state.customer_id,
        trigger_event_id=trigger,
        score=score,
        previous_band=previous_band if previous_band != "detractor" else None,
        previous_score=previous_score,
        rolling_nps=state.rolling_nps,
        trailing_revenue=revenue,
        currency=state.currency,
        value_tier=tier,
        churn_risk=state.churn_risk,
        churn_reasons=list(state.churn_reasons),
        open_complaints=state.open_complaints,
        segment=state.segment.contract() if state.segment else None,
        occurred_at=at.astimezone(UTC),
        emitted_at=now.astimezone(UTC),
        sla_due_at=(sla_due or at + SLA).astimezone(UTC),
        complaint_id=complaint_id,
        p_alive=state.p_alive,
    )


def evaluate_time(state: CustomerState, policy: Policy, stream_now: datetime,
                  now: datetime) -> list[Alert]:  # fmt: skip
    """Alerts that time passing raises for ``state`` (already rescored as of ``stream_now``).

    Records each in ``state`` so it is raised once per episode.
    """
    out: list[Alert] = []
    silent_on = "silent" in policy.rules
    if silent_on and state.lapsed_at is not None and state.last_purchase_at is not None:
        trigger = state.last_purchase_event_id or f"purchase@{state.last_purchase_at.isoformat()}"
        if state.silent_alerted != trigger and state.silent_lapse_at != state.lapsed_at:
            high, tier, revenue = _high_value(state, stream_now, policy)
            if high:
                state.silent_alerted, state.silent_lapse_at = trigger, state.lapsed_at
                out.append(_alert(state, trigger, state.score, state.lapsed_at, None, None,
                                  revenue, tier, policy, now, "silent", SILENT_RULE_VERSION,
                                  stream_now, sla_due=stream_now + SLA))  # fmt: skip
    overdue = [c for c in state.complaints.values()
               if "complaint_reply_overdue" in policy.rules
               and c.is_open and c.opened_at is not None and stream_now - c.opened_at > SLA
               and c.complaint_id not in state.reply_overdue_alerted]  # fmt: skip
    if overdue:
        high, tier, revenue = _high_value(state, stream_now, policy)
        for c in sorted(overdue, key=lambda c: (c.opened_at, c.complaint_id)):
            if not high:
                break
            assert c.opened_at is not None
            state.reply_overdue_alerted.append(c.complaint_id)
            trigger = c.opened_event_id or c.complaint_id
            out.append(_alert(state, trigger, state.score, c.opened_at + SLA, None, None, revenue,
                              tier, policy, now, "complaint_reply_overdue",
                              REPLY_OVERDUE_RULE_VERSION, stream_now, complaint_id=c.complaint_id,
                              sla_due=c.opened_at + SLA))  # fmt: skip
    if "case_contact_overdue" in policy.rules:
        for case in state.cases:
            if case.escalated or not case.overdue(stream_now):
                continue
            case.escalated = True
            _, tier, revenue = _high_value(state, stream_now, policy)
            out.append(_alert(state, case.alert_id, state.score, case.contact_due_at, None, None,
                              revenue, tier, policy, now, "case_contact_overdue",
                              CASE_OVERDUE_RULE_VERSION, stream_now,
                              sla_due=case.contact_due_at))  # fmt: skip
    known = set(state.complaints)
    if any(k not in known for k in state.reply_overdue_alerted):
        state.reply_overdue_alerted = [k for k in state.reply_overdue_alerted if k in known]
    return out


def period_alerts(kind: Literal["month", "quarter"], rows: list[PeriodRow], at: datetime,
                  currency: str, now: datetime) -> list[Alert]:  # fmt: skip
    """A ``churn_safety_line`` alert for each group of the current period above its line.

    ``rows`` are one period's rows (the current one), ``at`` the stream time they
    were counted at (the alert's ``occurred_at``); the caller remembers which
    alert ids it already sent (the ids are deterministic, so a repeat after a
    restart is recognisably the same alert).
    """
    out = []
    for r in rows:
        if r.group not in SAFETY_LINE_GROUPS or not r.above_safety_line:
            continue
        assert r.churn_rate is not None and r.safety_line is not None
        trigger = f"{kind}:{r.period}:{r.group}"
        tier = r.group.split(":", 1)[1] if r.group.startswith("tier:") else None
        out.append(Alert(
            alert_id=alert_id("churn_safety_line", PERIOD_ALERT_CUSTOMER, trigger),
            rule="churn_safety_line", rule_version=SAFETY_LINE_RULE_VERSION,
            customer_id=PERIOD_ALERT_CUSTOMER, trigger_event_id=trigger, score=None,
            previous_band=None, previous_score=None, rolling_nps=None,
            trailing_revenue=r.revenue_lost, currency=currency,
            value_tier="A" if tier == "A" else "B" if tier == "B" else "C" if tier == "C" else None,
            churn_risk=min(1.0, r.churn_rate), churn_reasons=[], open_complaints=0,
            occurred_at=at.astimezone(UTC),
            emitted_at=now.astimezone(UTC), sla_due_at=(now + SLA).astimezone(UTC),
            churn_period=ChurnPeriodFigures(
                period_kind=kind, period=r.period, group=r.group,
                churn_rate=r.churn_rate, churn_rate_start=r.churn_rate_start,
                safety_line=r.safety_line, lost=r.lost,
                customers_at_start=r.customers_at_start, customers_at_end=r.customers_at_end,
                revenue_lost=r.revenue_lost, churn_loss=r.churn_loss,
            ),
        ))  # fmt: skip
    return out

"""Per-customer state and the one function that folds an event into it.

``apply(state | None, event, policy) -> (state, outcome)`` is pure and
deterministic: the state a worker rebuilds from its changelog after a crash
equals a sequential replay of the same events through this function.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import msgspec

from app.domain import cases, churn, complaints, nps, value
from app.domain.cases import Case
from app.domain.complaints import ComplaintRecord
from app.domain.events import (
    AlertAction,
    AnyEvent,
    Band,
    Complaint,
    Purchase,
    Segment,
    SurveyResponse,
)

NPS_WINDOW = timedelta(days=90)
# Purchases are kept two trailing windows deep so a late event still sees its own year.
PURCHASE_MEMORY = 2 * value.TRAILING
RESOLVED_MEMORY = timedelta(days=400)
SCORE_HISTORY = 5
MAX_LAPSES = 8


class Outcome(StrEnum):
    """What applying one event did; labels the events metric."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True)
class Policy:
    """Everything apply needs besides the state and the event."""

    base_currency: str = "EUR"
    fx_rates: dict[str, Decimal] = field(default_factory=lambda: {"EUR": Decimal("1")})
    value_policy: value.ValuePolicy = field(default_factory=value.ValuePolicy)
    cutoffs: value.RevenueCutoffs = field(default_factory=value.RevenueCutoffs)
    dedup_event_ids: int = 1000
    realert_after: timedelta | None = None
    churn_model: churn.ChurnModel = field(default_factory=churn.load_model)
    # A customer whose P(alive) falls below this is lapsed (a lost customer for the KPIs).
    lapse_p_alive: float = 0.5
    contact_sla: timedelta = timedelta(hours=24)  # a case must be contacted within this
    rearm_after: timedelta = timedelta(days=14)  # out of detractor this long re-arms the rule
    rules: frozenset[str] = frozenset(
        {"detractor", "silent", "complaint_reply_overdue", "case_contact_overdue"}
    )


class Response(msgspec.Struct, kw_only=True, gc=False):
    """The newest survey answer of one respondent."""

    score: int
    at: datetime
    seq: int


class PurchaseRecord(msgspec.Struct, kw_only=True, gc=False):
    at: datetime
    amount: Decimal
    order_id: str


class Lapse(msgspec.Struct, kw_only=True, gc=False):
    """One spell of being lapsed: when, the trailing revenue lost with it, and any win-back."""

    at: datetime
    revenue: Decimal
    won_back_at: datetime | None = None


class Episode(msgspec.Struct, kw_only=True, gc=False):
    """A stay in the detractor band, opened by the survey that moved the customer there."""

    trigger_event_id: str
    at: datetime
    score: int
    previous_band: Band | None = None
    previous_score: int | None = None
    alerted: bool = False
    alerted_at: datetime | None = None
    left_at: datetime | None = None  # when the band left detractor after the alert


class SegmentFacts(msgspec.Struct, kw_only=True, gc=False):
    """The customer's latest segment (the event contract's Segment, as stored)."""

    tier: str | None = None
    region: str | None = None
    channel: str | None = None
    product: str | None = None

    @classmethod
    def of(cls, segment: Segment) -> SegmentFacts:
        return cls(tier=segment.tier, region=segment.region, channel=segment.channel,
                   product=segment.product)  # fmt: skip

    def contract(self) -> Segment:
        return Segment(tier=self.tier, region=self.region, channel=self.channel,
                       product=self.product)  # fmt: skip


class CustomerState(msgspec.Struct, kw_only=True, gc=False):
    """Everything known about one customer; the value of the customers table.

    A msgspec Struct, not a pydantic model: the worker parses and writes a state for
    nearly every event, and msgspec does both an order of magnitude faster over the
    same JSON (README, Dependencies). Nothing is validated on assignment, as before;
    the events that feed it are validated at the edge (domain.events). ``gc=False`` (here
    and on the records it holds): the garbage collector never tracks them, as they hold
    no reference cycles and a worker keeps tens of thousands parsed (streams/collector.py).
    """

    customer_id: str
    seq: int = 0
    segment: SegmentFacts | None = None
    last_event_at: datetime | None = None
    recent_event_ids: list[str] = msgspec.field(default_factory=list)

    score: int | None = None
    band: Band | None = None
    score_at: datetime | None = None
    score_history: list[Response] = msgspec.field(default_factory=list)
    previous_score: int | None = None
    previous_band: Band | None = None
    responses: dict[str, Response] = msgspec.field(default_factory=dict)
    rolling_nps: float | None = None
    response_count: int = 0

    purchases: list[PurchaseRecord] = msgspec.field(default_factory=list)
    purchase_count: int = 0
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    typical_gap_days: float | None = None
    trailing_revenue: Decimal = Decimal("0")
    currency: str = "EUR"
    high_value: bool = False
    value_tier: value.Tier = "C"

    complaints: dict[str, ComplaintRecord] = msgspec.field(default_factory=dict)
    open_complaints: int = 0
    sla_breaches: int = 0

    churn_risk: float = 0.0
    churn_reasons: list[str] = msgspec.field(default_factory=list)
    # Fields below were added with churn risk as of now; states written before load with
    # these defaults and are completed on their next refresh.
    churn_as_of: datetime | None = None
    p_alive: float | None = None
    first_seen_at: datetime | None = None
    last_purchase_event_id: str | None = None
    lapsed_at: datetime | None = None
    lapses: list[Lapse] = msgspec.field(default_factory=list)
    won_back: int = 0
    silent_alerted: str | None = None
    # the lapse the silent alert was sent for: one alert per lapse, however many late
    # purchases from before it arrive afterwards
    silent_lapse_at: datetime | None = None
    reply_overdue_alerted: list[str] = msgspec.field(default_factory=list)
    cases: list[Case] = msgspec.field(default_factory=list)
    recovered: int = 0

    detractor_episode: Episode | None = None
    detractor_alerted_at: datetime | None = None
    alerts_sent: int = 0

    def revenue_at(self, as_of: datetime) -> Decimal:
        """Trailing revenue as of ``as_of`` (purchases are kept in time order by fold)."""
        return value.trailing_revenue(self.purchases, as_of)


_COPY_ENCODER = msgspec.msgpack.Encoder()
_COPY_DECODER = msgspec.msgpack.Decoder(CustomerState)


def copy_state(state: CustomerState) -> CustomerState:
    """A deep copy: a msgpack round trip (a few microseconds; copy.deepcopy is far slower)."""
    return _COPY_DECODER.decode(_COPY_ENCODER.encode(state))


def apply(
    state: CustomerState | None, event: AnyEvent, policy: Policy
) -> tuple[CustomerState, Outcome]:
    """Fold one event into a copy of ``state``; the input is never changed."""
    work = (
        CustomerState(customer_id=event.customer_id, currency=policy.base_currency)
        if state is None
        else copy_state(state)
    )
    outcome = fold(work, event, policy)
    if outcome is not Outcome.DUPLICATE:
        refresh(work, policy)
    return work, outcome


def fold(state: CustomerState, event: AnyEvent, policy: Policy) -> Outcome:
    """Fold one event's facts into ``state`` in place; derived figures wait for refresh().

    The agent folds a whole batch and refreshes each touched customer once;
    the derived figures depend only on the facts, so the result equals
    refreshing after every event (what apply() does). A duplicate
    ``event_id`` (within the last ``dedup_event_ids`` ids of this customer)
    changes nothing. An unknown currency raises InvalidEventError before
    anything changes.
    """
    if event.event_id in state.recent_event_ids:
        return Outcome.DUPLICATE
    amount = (
        value.to_base(event.amount, event.currency, policy.fx_rates, policy.base_currency)
        if isinstance(event, Purchase)
        else None
    )
    state.seq += 1
    state.recent_event_ids.append(event.event_id)
    if len(state.recent_event_ids) > policy.dedup_event_ids:
        del state.recent_event_ids[: len(state.recent_event_ids) - policy.dedup_event_ids]
    if event.segment is not None:
        state.segment = SegmentFacts.of(event.segment)
    if state.last_event_at is None or event.occurred_at > state.last_event_at:
        state.last_event_at = event.occurred_at
    if state.first_seen_at is None or event.occurred_at < state.first_seen_at:
        state.first_seen_at = event.occurred_at
    outcome = _HANDLERS[type(event)](state, event, amount)
    _prune(state, state.last_event_at)
    return outcome


def _survey(state: CustomerState, event: Any, _: Decimal | None) -> Outcome:
    ev: SurveyResponse = event
    respondent = ev.respondent_id or "_account"
    state.response_count += 1
    current = state.responses.get(respondent)
    if current is None or ev.occurred_at >= current.at:
        state.responses[respondent] = Response(score=ev.score, at=ev.occurred_at, seq=state.seq)
    # The band follows event time; equal timestamps: the later-arriving response wins.
    entry = Response(score=ev.score, at=ev.occurred_at, seq=state.seq)
    history = state.score_history
    history.append(entry)
    history.sort(key=lambda r: (r.at, r.seq))
    del history[:-SCORE_HISTORY]
    newest = history[-1]
    state.score, state.band, state.score_at = newest.score, nps.band(newest.score), newest.at
    if len(history) > 1:
        state.previous_score = history[-2].score
        state.previous_band = nps.band(history[-2].score)
    if newest is not entry:
        return Outcome.LATE
    state.recovered += len(cases.recover(state.cases, state.band, ev.occurred_at))
    return Outcome.PROCESSED


def _purchase(state: CustomerState, event: Any, amount: Decimal | None) -> Outcome:
    ev: Purchase = event
    assert amount is not None
    record = PurchaseRecord(at=ev.occurred_at, amount=amount, order_id=ev.order_id)
    bisect.insort(state.purchases, record, key=lambda p: p.at)  # kept in event-time order
    state.purchase_count += 1
    if state.first_purchase_at is None or ev.occurred_at < state.first_purchase_at:
        state.first_purchase_at = ev.occurred_at
    late = state.last_purchase_at is not None and ev.occurred_at < state.last_purchase_at
    if amount > 0 and (state.last_purchase_at is None or ev.occurred_at > state.last_purchase_at):
        state.last_purchase_at = ev.occurred_at
        state.last_purchase_event_id = ev.event_id
        if state.lapsed_at is not None and ev.occurred_at > state.lapsed_at:
            # A lapsed customer who buys again is won back.
            state.won_back += 1
            if state.lapses:
                state.lapses[-1].won_back_at = ev.occurred_at
            state.lapsed_at = None
    return Outcome.LATE if late else Outcome.PROCESSED


def _complaint(state: CustomerState, event: Any, _: Decimal | None) -> Outcome:
    ev: Complaint = event
    current = state.complaints.get(ev.complaint_id)
    late = current is not None and ev.occurred_at < current.status_at
    record = state.complaints[ev.complaint_id] = complaints.step(
        current, ev.complaint_id, ev.status, ev.category, ev.severity, ev.occurred_at
    )
    if ev.status == "opened" and record.opened_at == ev.occurred_at:
        record.opened_event_id = ev.event_id
    return Outcome.LATE if late else Outcome.PROCESSED


_HANDLERS: dict[type, Callable[[CustomerState, Any, Decimal | None], Outcome]] = {
    SurveyResponse: _survey,
    Purchase: _purchase,
    Complaint: _complaint,
}


def refresh(state: CustomerState, policy: Policy, now: datetime | None = None) -> None:
    """Recompute every derived figure; churn, reply breaches and lapse as of ``now``.

    ``now`` is stream time (how far every input topic of the customer's partition
    has been read: domain.batch.watermark), possibly before the customer's own newest
    event; figures that only depend on the customer's own events are as of its newest
    event. Without ``now``, everything is as of the newest event.
    """
    as_of = state.last_event_at
    if as_of is None:
        return
    # Churn is scored as of ``now`` even when the customer's own newest event is later:
    # stream time is how far every input topic has been read, and a customer's complaint
    # read ahead of its purchases must not make it look as if it stopped buying.
    now = as_of if now is None else now
    if state.score_at is not None:
        since = state.score_at - NPS_WINDOW
        counts = nps.NpsCounts()
        for r in state.responses.values():
            if r.at >= since:
                counts.agg(r.score)
        state.rolling_nps = counts.result()
    state.trailing_revenue = state.revenue_at(as_of)
    state.typical_gap_days = value.typical_gap_days([p.at for p in state.purchases if p.amount > 0])
    classify(state, policy)
    state.open_complaints = sum(1 for c in state.complaints.values() if c.is_open)
    rescore(state, policy, now)


def classify(state: CustomerState, policy: Policy) -> None:
    """High value and tier from trailing revenue against the policy's current boundaries."""
    tier = state.segment.tier if state.segment else None
    state.high_value, state.value_tier = value.classify(
        state.trailing_revenue, tier, policy.value_policy, policy.cutoffs
    )


def sweep(state: CustomerState, policy: Policy, now: datetime) -> None:
    """Re-score a customer that no event touched, as of ``now`` (the sweep).

    Its facts did not change since it was last refreshed, so of refresh() only what
    time or the policy moves is computed again: the tier (the Pareto boundary may
    have moved) and churn, reply breaches and lapse. A state stored before churn was
    scored as of now gets a full refresh.
    """
    if state.churn_as_of is None:
        refresh(state, policy, now)
        return
    classify(state, policy)
    rescore(state, policy, now)


def marks(state: CustomerState) -> tuple[object, ...]:
    """What a re-score can change that is a fact worth storing, not a figure as of now.

    A swept customer whose marks did not move (and that raised no alert) need not be
    written: its churn risk as of now is recomputed wherever it is read.
    """
    return (state.lapsed_at, len(state.lapses), state.high_value, state.value_tier,
            state.sla_breaches)  # fmt: skip


def rescore(state: CustomerState, policy: Policy, now: datetime) -> None:
    """Churn risk, reply-standard breaches and lapse as of ``now`` (the sweep's entry point)."""
    state.sla_breaches = sum(1 for c in state.complaints.values() if c.breached(now))
    result = churn.assess(churn_inputs(state), now, policy.churn_model)
    state.churn_risk, state.churn_reasons = result.risk, result.reasons
    state.p_alive, state.churn_as_of = result.p_alive, now
    has_bought = state.last_purchase_at is not None
    if state.lapsed_at is None and has_bought and result.p_alive < policy.lapse_p_alive:
        state.lapsed_at = now
        state.lapses.append(Lapse(at=now, revenue=state.revenue_at(now)))
        del state.lapses[:-MAX_LAPSES]
    elif state.lapsed_at is not None and result.p_alive >= policy.lapse_p_alive:
        # A late purchase showed the customer was not gone: the lapse is withdrawn.
        if state.lapses and state.lapses[-1].at == state.lapsed_at:
            state.lapses.pop()
        state.lapsed_at = None


def churn_inputs(state: CustomerState, keep: bool = False) -> churn.ChurnInputs:
    """The facts of a state that churn risk reads.

    ``keep=True`` copies the complaints (they change in place as events fold), for a
    caller that holds the inputs while the state moves on (the backtest's snapshots).
    """
    complaints = state.complaints.values()
    return churn.ChurnInputs(
        purchases=[(p.at, float(p.amount)) for p in state.purchases],
        scores=[(r.at, r.score) for r in state.score_history],
        complaints=[msgspec.structs.replace(c) for c in complaints] if keep else list(complaints),
        first_seen=state.first_seen_at,
    )


def _prune(state: CustomerState, as_of: datetime | None) -> None:
    """Bound the state: old purchases, responses outside any window, long-closed complaints."""
    if as_of is None:
        return
    keep_from = as_of - PURCHASE_MEMORY
    if state.purchases and state.purchases[0].at < keep_from:
        state.purchases = [p for p in state.purchases if p.at >= keep_from]
    if state.score_at is not None:
        since = state.score_at - NPS_WINDOW
        stale = [k for k, r in state.responses.items() if r.at < since]
        for k in stale:
            del state.responses[k]
    if state.complaints:
        closed_before = as_of - RESOLVED_MEMORY
        gone = [
            k for k, c in state.complaints.items() if not c.is_open and c.status_at < closed_before
        ]
        for k in gone:
            del state.complaints[k]


def iso(at: datetime | None) -> str | None:
    """RFC 3339 in UTC: one offset for every time CRM reads."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at else None


def public_view(
    state: CustomerState, now: datetime | None = None, horizon_days: int | None = None
) -> dict[str, Any]:
    """The state as CRM reads it over HTTP: figures, not internals; time-driven ones as of now."""
    as_of = now or state.last_event_at
    open_list = []
    for c in state.complaints.values():
        if c.is_open:
            age = c.age(as_of) if as_of else None
            open_list.append(
                {
                    "complaint_id": c.complaint_id,
                    "status": c.status,
                    "category": c.category,
                    "severity": c.severity,
                    "opened_at": iso(c.opened_at),
                    "age_hours": round(age.total_seconds() / 3600, 2) if age else None,
                    "sla_breached": c.breached(as_of) if as_of else False,
                }
            )
    resolutions = [
        round(t.total_seconds() / 3600, 2)
        for c in state.complaints.values()
        if not c.is_open and (t := c.resolution_time()) is not None
    ]

    return {
        "customer_id": state.customer_id,
        "segment": msgspec.structs.asdict(state.segment) if state.segment else None,
        "band": state.band,
        "latest_score": state.score,
        "latest_score_at": iso(state.score_at),
        "previous_band": state.previous_band,
        "previous_score": state.previous_score,
        "rolling_nps": state.rolling_nps,
        "responses": state.response_count,
        "trailing_revenue": str(state.trailing_revenue),
        "currency": state.currency,
        "purchase_count": state.purchase_count,
        "first_purchase_at": state.first_purchase_at.isoformat()
        if state.first_purchase_at
        else None,
        "last_purchase_at": iso(state.last_purchase_at),
        "typical_gap_days": state.typical_gap_days,
        "high_value": state.high_value,
        "value_tier": state.value_tier,
        "churn_risk": state.churn_risk,
        "churn_reasons": state.churn_reasons,
        "churn_horizon_days": horizon_days,
        "churn_as_of": iso(state.churn_as_of),
        "p_alive": state.p_alive,
        "lapsed": state.lapsed_at is not None,
        "lapsed_at": iso(state.lapsed_at),
        "won_back": state.won_back,
        "cases": [case_view(c, as_of) for c in state.cases],
        "recovered_detractors": state.recovered,
        "open_complaints": state.open_complaints,
        "open_complaint_details": open_list,
        "resolution_hours": resolutions,
        "sla_breaches": state.sla_breaches,
        "last_event_at": iso(state.last_event_at),
        "events": state.seq,
        "alerts_sent": state.alerts_sent,
    }


def next_check(state: CustomerState, policy: Policy, now: datetime) -> datetime:
    """When time alone next changes something about this customer, so the sweep looks again.

    The earliest of: an open complaint reaching the 24 h reply standard, and
    a regular look at half the customer's own purchase gap (between 1 and 14
    days; 30 days once lapsed), so the risk shown never drifts far from the
    risk as of now and a lapse is seen within that step.
    """
    gap = state.typical_gap_days or policy.churn_model.rhythm.mean_gap_days
    step = timedelta(days=30) if state.lapsed_at else timedelta(days=min(14.0, max(1.0, gap / 2)))
    due = now + step
    for c in state.complaints.values():
        if c.is_open and c.opened_at is not None:
            breach = c.opened_at + complaints.REPLY_STANDARD + timedelta(seconds=1)
            if now < breach < due:
                due = breach
    for case in state.cases:
        if case.contacted_at is None and case.is_open and not case.escalated:
            overdue = case.contact_due_at + timedelta(seconds=1)
            if now < overdue < due:
                due = overdue
    return due


def apply_action(state: CustomerState, action: AlertAction) -> Outcome:
    """Fold one CRM action into the case of its alert (a repeated ``event_id`` does nothing).

    An action is CRM's activity, not the customer's: it changes no clock, count
    or figure of the customer, only the case. Raises InvalidEventError
    ``unknown_alert`` when the customer has no case for the alert.
    """
    if action.event_id in state.recent_event_ids:
        return Outcome.DUPLICATE
    cases.act(state.cases, action.alert_id, action.action, action.actor, action.occurred_at)
    state.recent_event_ids.append(action.event_id)
    return Outcome.PROCESSED



def case_view(c: Case, now: datetime | None) -> dict[str, Any]:
    """One case as CRM reads it."""
    return {
        "alert_id": c.alert_id, "rule": c.rule, "status": c.status,
        "opened_at": iso(c.opened_at), "contact_due_at": iso(c.contact_due_at),
        "overdue": c.overdue(now) if now else False,
        "acknowledged_at": iso(c.acknowledged_at), "contacted_at": iso(c.contacted_at),
        "resolved_at": iso(c.resolved_at), "dismissed_at": iso(c.dismissed_at),
        "actor": c.actor, "escalated": c.escalated, "recovered_at": iso(c.recovered_at),
        "later_scores": list(c.later_scores),
    }  # fmt: skip

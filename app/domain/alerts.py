"""Alert rules: which state changes CRM must hear about, and the alert they get.

Rule ``detractor`` (version 1): a survey moves a high-value customer's band
into detractor from promoter, passive or no score. Exactly one alert per
transition; while the customer stays a detractor no further alert, unless a
re-alert cooldown is configured and has passed; leaving the detractor band
re-arms the rule.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.domain import value
from app.domain.customer import CustomerState, Policy, refresh
from app.domain.events import Alert, AnyEvent, Band, SurveyResponse

DETRACTOR_RULE_VERSION = 1
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
    """Alerts that ``event`` (already folded into ``after``) raises; marks ``after`` as alerted.

    High-value is judged on trailing revenue up to the survey's own event time.
    """
    if not isinstance(event, SurveyResponse) or after.band != "detractor":
        return []
    if after.score_at != event.occurred_at or after.score != event.score:
        return []  # a late response never changes the band
    if before.band != "detractor":
        after.detractor_alerted_at = None  # the band left detractor since: re-armed
        transition = True
    else:
        transition = False
    if not transition:
        last = after.detractor_alerted_at
        cooldown = policy.realert_after
        if cooldown is None or last is None or event.occurred_at - last < cooldown:
            return []
    revenue = after.revenue_at(event.occurred_at)
    tier = after.segment.tier if after.segment else None
    high, value_tier = value.classify(revenue, tier, policy.value_policy, policy.cutoffs)
    if not high:
        return []
    refresh(after, policy)  # the alert carries figures as of this event
    after.detractor_alerted_at = event.occurred_at
    after.alerts_sent += 1
    previous_band = before.band if transition else "detractor"
    return [
        Alert(
            alert_id=alert_id("detractor", after.customer_id, event.event_id),
            rule="detractor",
            rule_version=DETRACTOR_RULE_VERSION,
            customer_id=after.customer_id,
            trigger_event_id=event.event_id,
            score=event.score,
            previous_band=previous_band if previous_band != "detractor" else None,
            previous_score=before.score,
            rolling_nps=after.rolling_nps,
            trailing_revenue=revenue,
            currency=after.currency,
            value_tier=value_tier,
            churn_risk=after.churn_risk,
            churn_reasons=list(after.churn_reasons),
            open_complaints=after.open_complaints,
            segment=after.segment,
            occurred_at=event.occurred_at.astimezone(UTC),
            emitted_at=now.astimezone(UTC),
            sla_due_at=(event.occurred_at + SLA).astimezone(UTC),
        )
    ]

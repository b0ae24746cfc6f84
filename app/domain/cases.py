"""Cases: what CRM did about each alert, the contact SLA, and recovered detractors.

Every alert about a customer opens a case in that customer's state. CRM reports
what it did through alert actions (acknowledged, contacted, resolved,
dismissed). A case not contacted within the contact SLA (24 h of event time by
default: the source's reply standard) escalates once. A detractor whose
contacted case is followed by a passive or promoter answer counts as
recovered: the closed loop the source asks for ("turn detractors into loyal
customers").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import msgspec

from app.errors import InvalidEventError

CaseStatus = Literal["open", "acknowledged", "contacted", "resolved", "dismissed"]
CLOSED = frozenset({"resolved", "dismissed"})
MAX_CASES = 20  # per customer; the oldest closed cases go first
CASE_RULES = frozenset({"detractor", "silent", "complaint_reply_overdue"})


class Case(msgspec.Struct, kw_only=True, gc=False):
    """One alert's case, as CRM's actions describe it (actions may arrive out of order)."""

    alert_id: str
    rule: str
    trigger_event_id: str
    opened_at: datetime  # the alert's occurred_at (event time)
    contact_due_at: datetime
    status: CaseStatus = "open"
    status_at: datetime
    acknowledged_at: datetime | None = None
    contacted_at: datetime | None = None
    resolved_at: datetime | None = None
    dismissed_at: datetime | None = None
    actor: str | None = None
    escalated: bool = False
    recovered_at: datetime | None = None
    later_scores: list[int] = msgspec.field(default_factory=list)  # low answers added to the case

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED

    def overdue(self, now: datetime) -> bool:
        """Not contacted by its due time and not closed."""
        return self.contacted_at is None and self.is_open and now > self.contact_due_at


def open_case(cases: list[Case], alert_id: str, rule: str, trigger: str, at: datetime,
              contact_sla: timedelta) -> Case | None:  # fmt: skip
    """Open the case of a new alert (a repeated alert keeps its case)."""
    if rule not in CASE_RULES or any(c.alert_id == alert_id for c in cases):
        return None
    case = Case(alert_id=alert_id, rule=rule, trigger_event_id=trigger, opened_at=at,
                contact_due_at=at + contact_sla, status_at=at)  # fmt: skip
    cases.append(case)
    while len(cases) > MAX_CASES:
        oldest_closed = next((c for c in cases if not c.is_open), cases[0])
        cases.remove(oldest_closed)
    return case


def act(cases: list[Case], alert_id: str, action: CaseStatus, actor: str, at: datetime) -> Case:
    """Fold one CRM action into its case; the newest action by time sets the status.

    Each action's time is the earliest report of it (contacted twice: the first
    counts). An action for an alert this customer has no case for is bad input.
    """
    case = next((c for c in cases if c.alert_id == alert_id), None)
    if case is None:
        raise InvalidEventError("unknown_alert", f"no case for alert {alert_id}", "alert_id")
    field = f"{action}_at"
    current = getattr(case, field)
    if current is None or at < current:
        setattr(case, field, at)
    if at >= case.status_at:
        case.status, case.status_at, case.actor = action, at, actor
    return case


def recover(cases: list[Case], band: str | None, at: datetime) -> list[Case]:
    """A passive or promoter answer after contact recovers the customer's detractor cases."""
    if band not in ("passive", "promoter"):
        return []
    out = []
    for c in cases:
        if (c.rule == "detractor" and c.recovered_at is None and c.contacted_at is not None
                and at > c.contacted_at):  # fmt: skip
            c.recovered_at = at
            out.append(c)
    return out

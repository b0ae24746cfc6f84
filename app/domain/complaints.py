"""Complaint lifecycle and the 24-hour reply standard.

Only about 1 in 10 dissatisfied customers complains, so each complaint stands
for many silent ones; what the company controls is resolution and its speed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import msgspec

REPLY_STANDARD = timedelta(hours=24)
Status = Literal["opened", "resolved", "escalated"]


class ComplaintRecord(msgspec.Struct, kw_only=True, gc=False):
    """One complaint as its lifecycle events (possibly out of order) describe it."""

    complaint_id: str
    category: str
    severity: Literal["minor", "major"]
    status: Status
    status_at: datetime
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    escalated: bool = False
    opened_event_id: str | None = None  # names the complaint in its reply-overdue alert

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"

    def resolution_time(self) -> timedelta | None:
        if self.resolved_at is None or self.opened_at is None:
            return None
        return max(self.resolved_at - self.opened_at, timedelta(0))

    def breached(self, as_of: datetime) -> bool:
        """Reply standard missed: resolved after 24 h, or still open 24 h after opening."""
        if self.opened_at is None:
            return False
        if self.resolved_at is not None and not self.is_open:
            return self.resolved_at - self.opened_at > REPLY_STANDARD
        return as_of - self.opened_at > REPLY_STANDARD

    def age(self, as_of: datetime) -> timedelta | None:
        if self.opened_at is None:
            return None
        return max(as_of - self.opened_at, timedelta(0))


def step(
    record: ComplaintRecord | None,
    complaint_id: str,
    status: Status,
    category: str,
    severity: Literal["minor", "major"],
    at: datetime,
) -> ComplaintRecord:
    """Fold one lifecycle event; the newest event by time decides the status.

    Events may arrive out of order (a resolution before its opening): the
    opening time is the earliest ``opened`` seen and the status follows event
    time, so replay order does not change the outcome.
    """
    if record is None:
        record = ComplaintRecord(
            complaint_id=complaint_id, category=category, severity=severity,
            status=status, status_at=at,
        )  # fmt: skip
    elif at >= record.status_at:
        record.status, record.status_at = status, at
    if severity == "major":
        record.severity = "major"  # an escalation to major never goes back to minor
    if status == "opened":
        record.opened_at = at if record.opened_at is None else min(record.opened_at, at)
        record.category = category
    elif status == "resolved":
        record.resolved_at = at if record.resolved_at is None else max(record.resolved_at, at)
    else:
        record.escalated = True
    return record

"""Builders for domain test cases: events with sensible defaults."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.domain.events import Complaint, Purchase, Segment, SurveyResponse

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ids = itertools.count(1)


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def _common(kw: dict[str, Any]) -> dict[str, Any]:
    base = {
        "event_id": f"e{next(_ids)}",
        "customer_id": "c1",
        "occurred_at": T0,
        "schema_version": 1,
    }
    base.update(kw)
    if isinstance(base.get("segment"), dict):
        base["segment"] = Segment(**base["segment"])
    return base


def survey(score: int, day: float = 0, **kw: Any) -> SurveyResponse:
    return SurveyResponse(
        event_type="survey", score=score, **_common({"occurred_at": at(day), **kw})
    )


def purchase(amount: str | int, day: float = 0, currency: str = "EUR", **kw: Any) -> Purchase:
    return Purchase(
        event_type="purchase", order_id=f"o{next(_ids)}", amount=Decimal(str(amount)),
        currency=currency, **_common({"occurred_at": at(day), **kw}),
    )  # fmt: skip


def complaint(
    cid: str, status: str, day: float = 0, hours: float = 0, severity: str = "major", **kw: Any
) -> Complaint:
    return Complaint(
        event_type="complaint", complaint_id=cid, status=status, category="service",
        severity=severity, **_common({"occurred_at": at(day, hours), **kw}),
    )  # fmt: skip

"""Churn risk in [0, 1] with the reasons that drive it.

Formula (noisy-OR): ``risk = 1 - prod(1 - c_i)`` over independent signals
``c_i`` in [0, 1]. Adding a signal never lowers risk; removing one never
raises it. Each signal is calibrated on a figure from shared/DOMAIN.md:

- ``open_complaint``: an unresolved complaint counts as 1 - repurchase
  intention of customers whose complaint was not resolved (major 19% -> 0.81,
  minor 46% -> 0.54).
- ``slow_resolution``: resolved after the 24 h standard counts as 1 - the
  "complained, resolved" intention (major 54% -> 0.46, minor 74% -> 0.26).
  A quick resolution counts as 1 - "resolved quickly" (major 82% -> 0.18,
  minor 95% -> 0.05) and is not a reason. Complaints count for 365 days.
- ``detractor``: a latest score of 0-6 counts 0.35 + 0.05 per point below 6
  (0.65 at 0); 1 in 10 dissatisfied customers complains, so a detractor
  score is the loudest early signal of the silent nine. ``passive`` counts 0.10.
- ``inactive``: days since the last purchase over the customer's own typical
  gap; no signal up to 1.5x, rising linearly to 0.7 at 4.5x.
- ``spend_decline``: spend in the last 90 days against the 90 before;
  a fall of 25% or more counts 0.3 x the fall.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from app.domain.complaints import ComplaintRecord
from app.domain.events import Band

OPEN = {"major": 1 - 0.19, "minor": 1 - 0.46}
RESOLVED_SLOWLY = {"major": 1 - 0.54, "minor": 1 - 0.74}
RESOLVED_QUICKLY = {"major": 1 - 0.82, "minor": 1 - 0.95}
COMPLAINT_MEMORY = timedelta(days=365)
INACTIVE_START, INACTIVE_FULL, INACTIVE_MAX = 1.5, 4.5, 0.7
DECLINE_START, DECLINE_WEIGHT = 0.25, 0.3


@dataclass(frozen=True)
class ChurnInputs:
    """The signals churn risk is computed from, all as of one instant."""

    band: Band | None
    score: int | None
    complaints: Iterable[ComplaintRecord]
    days_since_purchase: float | None
    typical_gap_days: float | None
    spend_decline: float
    as_of: datetime


def signals(inp: ChurnInputs) -> list[tuple[str | None, float]]:
    """Every non-zero signal as (reason code or None, contribution)."""
    out: list[tuple[str | None, float]] = []
    if inp.band == "detractor" and inp.score is not None:
        out.append(("detractor", 0.35 + 0.05 * (6 - inp.score)))
    elif inp.band == "passive":
        out.append(("passive", 0.10))
    for c in inp.complaints:
        if c.status_at < inp.as_of - COMPLAINT_MEMORY:
            continue
        if c.is_open:
            out.append(("open_complaint", OPEN[c.severity]))
        elif c.breached(inp.as_of):
            out.append(("slow_resolution", RESOLVED_SLOWLY[c.severity]))
        else:
            out.append((None, RESOLVED_QUICKLY[c.severity]))
    if inp.days_since_purchase is not None and inp.typical_gap_days:
        ratio = inp.days_since_purchase / max(inp.typical_gap_days, 1.0)
        if ratio > INACTIVE_START:
            span = INACTIVE_FULL - INACTIVE_START
            out.append(
                ("inactive", min(INACTIVE_MAX, INACTIVE_MAX * (ratio - INACTIVE_START) / span))
            )
    if inp.spend_decline >= DECLINE_START:
        out.append(("spend_decline", DECLINE_WEIGHT * inp.spend_decline))
    return out


def risk(inp: ChurnInputs) -> tuple[float, list[str]]:
    """Churn risk and its reason codes, strongest first.

    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> risk(ChurnInputs("detractor", 3, [], None, None, 0.0, now))
    (0.5, ['detractor'])
    """
    keep = 1.0
    strength: dict[str, float] = {}
    for reason, c in signals(inp):
        keep *= 1.0 - min(max(c, 0.0), 1.0)
        if reason is not None:
            strength[reason] = max(strength.get(reason, 0.0), c)
    reasons = sorted(strength, key=lambda r: (-strength[r], r))
    return round(1.0 - keep, 6), reasons


@dataclass(frozen=True)
class PeriodChurn:
    """Churn over a period, as the source defines it (see shared/DOMAIN.md)."""

    lost: int
    rate: float
    convention: str


def period_churn(at_start: int, at_end: int, new: int, divide_by: str = "end") -> PeriodChurn:
    """``lost = start - (end - new)``; rate = lost / customers_at_end (the source's convention).

    ``divide_by="start"`` gives the more common lost / customers_at_start.

    >>> period_churn(3000, 3300, 500)
    PeriodChurn(lost=200, rate=0.0606060606060606, convention='end')
    """
    lost = at_start - (at_end - new)
    denominator = at_end if divide_by == "end" else at_start
    if denominator <= 0:
        raise ValueError(f"customers_at_{divide_by} must be positive")
    return PeriodChurn(lost, lost / denominator, divide_by)


def churn_loss(revenue_lost: Decimal, margin: Decimal) -> Decimal:
    """Revenue lost with the churned customers times profit margin."""
    return revenue_lost * margin

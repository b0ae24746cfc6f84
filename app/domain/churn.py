"""Churn risk: the probability that a customer is gone within a horizon, as of a given time.

Why this shape: churn is mostly silent (1 in 10 unhappy customers complains,
68% of leavers go because they felt ignored), so the first signal is the
customer's own purchase rhythm breaking, and it must be read **as of now**,
not as of the customer's last event. The score therefore has two layers:

1. **Purchase rhythm**: an MBG/NBD model (Batislam et al. 2007, the BG/NBD of
   Fader, Hardie and Lee 2005 with drop-out allowed after the first purchase)
   gives ``P(alive)`` from each customer's frequency ``x`` (repeat purchases),
   recency ``t_x`` and age ``T``, with population parameters fitted from the
   table (``app.analysis.fit.fit_mbgnbd``).
2. **Fusion**: a logistic model over ``FEATURES`` (P(alive) as a log-odds, the
   gap since the last purchase against the customer's own rhythm, stretching
   gaps and shrinking baskets, the latest NPS answer and its fall, open and
   unanswered complaints, slow resolutions) gives a calibrated probability of
   churning within ``horizon_days``. Its weights are fitted on outcomes
   (``feedback backtest --fit``), never copied from the figures the simulator
   uses; the shipped defaults are in ``churn_model.json`` with what they were
   fitted on.

Reason codes are the features whose contribution to the log-odds is at least
``reason_min``, summed per reason and listed strongest first.

Per customer the scoring is a few dozen float operations: cheap enough to
re-score every customer as stream time passes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

from app.domain.complaints import REPLY_STANDARD, ComplaintRecord
from app.domain.value import median as _median

DAY = 86400.0
COMPLAINT_MEMORY = timedelta(days=365)
SCORE_MEMORY = timedelta(days=180)
MODEL_FILE = Path(__file__).with_name("churn_model.json")

# Feature name -> the reason code it supports (None: protective or neutral, never a reason).
FEATURES: dict[str, str | None] = {
    "dropout": "inactive",  # MBG/NBD P(dead) as log-odds, scaled to [0, 1]
    "overdue": "inactive",  # log(1 + days since last purchase / own typical gap)
    "no_purchase": "inactive",  # known to us, never bought
    "gap_stretch": "inactive",  # the last gap against the customer's earlier gaps
    "basket_shrink": "spend_decline",  # recent baskets against earlier ones
    "spend_decline": "spend_decline",  # spend in the last 90 days against the 90 before
    "detractor": "detractor",  # latest score 0-6 in the last 180 days, (7 - score) / 7
    "passive": "passive",  # latest score 7-8
    "falling_score": "falling_score",  # previous minus latest score, / 10
    "open_complaint": "open_complaint",  # open complaints still inside the 24 h standard
    "no_reply_24h": "no_reply_24h",  # open complaints past the 24 h reply standard
    "slow_resolution": "slow_resolution",  # resolved after 24 h, last 365 days
    "quick_resolution": None,  # resolved within 24 h, last 365 days
    "promoter": None,  # latest score 9-10
}


@dataclass(frozen=True)
class Rhythm:
    """MBG/NBD population parameters (time in days)."""

    r: float = 0.9
    alpha: float = 18.0
    a: float = 0.3
    b: float = 6.0

    def p_alive(self, x: int, t_x: float, age: float) -> float:
        """P(alive | x repeat purchases, last at t_x, observed for age days).

        MBG/NBD: ``1 / (1 + a / (b + x) * ((alpha + T) / (alpha + t_x)) ** (r + x))``.

        >>> round(Rhythm(1.0, 10.0, 0.5, 5.0).p_alive(4, 100.0, 100.0), 3)
        0.947
        """
        if age <= 0:
            return 1.0
        ratio = (self.alpha + age) / (self.alpha + t_x)
        exponent = (self.r + x) * math.log(ratio)
        odds = math.log(self.a / (self.b + x)) + exponent
        if odds > 700:
            return 0.0
        return 1.0 / (1.0 + math.exp(odds))

    @property
    def mean_gap_days(self) -> float:
        """The population's typical gap between purchases (1 / mean purchase rate)."""
        return self.alpha / self.r


@dataclass(frozen=True)
class Logistic:
    """``P = 1 / (1 + exp(-(intercept + sum(w_i * x_i))))`` over FEATURES."""

    intercept: float
    weights: Mapping[str, float]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Logistic:
        unknown = set(data.get("weights", {})) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown churn features {sorted(unknown)}")
        return cls(float(data["intercept"]), {k: float(v) for k, v in data["weights"].items()})

    def to_dict(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "weights": dict(self.weights)}

    def log_odds(self, f: Mapping[str, float]) -> float:
        z = self.intercept
        for name, w in self.weights.items():
            x = f.get(name, 0.0)
            if x:
                z += w * x
        return z

    @cached_property
    def in_feature_order(self) -> bool:
        """The weights are listed in FEATURES order (the shipped model's are): a pass over
        the features then sums them in the order log_odds does."""
        return [n for n in FEATURES if n in self.weights] == list(self.weights)


@dataclass(frozen=True)
class ChurnModel:
    """Two logistic fusions over the same features, the horizon, and where they came from.

    ``churn`` gives P(gone within ``horizon_days``); ``gone`` gives P(already
    gone), so ``P(alive) = 1 - P(gone)`` is calibrated on outcomes too. Without
    ``gone`` (a model file from a user who fitted only the first),
    P(alive) is the MBG/NBD one.
    """

    churn: Logistic
    gone: Logistic | None = None
    horizon_days: int = 90
    rhythm: Rhythm = field(default_factory=Rhythm)
    reason_min: float = 0.15
    trained_on: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChurnModel:
        return cls(
            churn=Logistic.from_dict(data["churn"]),
            gone=Logistic.from_dict(data["gone"]) if data.get("gone") else None,
            horizon_days=int(data.get("horizon_days", 90)),
            rhythm=Rhythm(**data.get("rhythm", {})),
            reason_min=float(data.get("reason_min", 0.15)),
            trained_on=str(data.get("trained_on", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "churn": self.churn.to_dict(),
            "gone": self.gone.to_dict() if self.gone else None,
            "horizon_days": self.horizon_days, "reason_min": self.reason_min,
            "rhythm": {"r": self.rhythm.r, "alpha": self.rhythm.alpha,
                       "a": self.rhythm.a, "b": self.rhythm.b},
            "trained_on": self.trained_on,
        }  # fmt: skip

    def with_rhythm(self, rhythm: Rhythm) -> ChurnModel:
        return ChurnModel(self.churn, self.gone, self.horizon_days, rhythm,
                          self.reason_min, self.trained_on)  # fmt: skip


def load_model(path: Path | None = None) -> ChurnModel:
    """The model at ``path``, or the shipped default."""
    return ChurnModel.from_dict(json.loads((path or MODEL_FILE).read_text()))


@dataclass(frozen=True)
class ChurnInputs:
    """What a customer's state says about churn, independent of when it is read."""

    purchases: Sequence[tuple[datetime, float]]  # (time, amount in base currency), by time
    scores: Sequence[tuple[datetime, int]]  # newest answers, by time
    complaints: Iterable[ComplaintRecord]
    first_seen: datetime | None = None


@dataclass(frozen=True)
class Assessment:
    """Churn risk as of one instant, with what drives it."""

    risk: float
    reasons: list[str]
    p_alive: float
    as_of: datetime


def summary(purchases: Sequence[tuple[datetime, float]], as_of: datetime
            ) -> tuple[int, float, float] | None:  # fmt: skip
    """MBG/NBD inputs (x repeat purchase days, t_x, T in days) from positive purchases.

    Purchases on the same day count once (the model counts transactions, a
    basket split over two orders is one visit). None without a purchase.
    """
    times = [p for p, amount in purchases if amount > 0 and p <= as_of]
    if not times:
        return None
    days = {p.date() for p in times}
    first, last = min(times), max(times)
    age = (as_of - first).total_seconds() / DAY
    return len(days) - 1, (last - first).total_seconds() / DAY, age


def features(inp: ChurnInputs, as_of: datetime, rhythm: Rhythm) -> dict[str, float]:
    """Every feature of FEATURES as of ``as_of``; 0 is the healthy value of each.

    Written for speed (it runs for every touched and every swept customer):
    times as epoch seconds, each list built once.
    """
    f = dict.fromkeys(FEATURES, 0.0)
    now = as_of.timestamp()
    purchases = inp.purchases
    stamps: list[float] = []
    secs: list[float] = []  # the positive purchases up to as_of, in time order
    baskets: list[float] = []
    days = set()
    for t, a in purchases:
        stamp = t.timestamp()
        stamps.append(stamp)
        if a > 0 and stamp <= now:  # the same test as t <= as_of: microseconds are exact
            secs.append(stamp)
            baskets.append(a)
            days.add(t.date())
    if not secs:
        f["no_purchase"] = 1.0
        f["dropout"] = _dropout(1.0)
    else:
        first, last = min(secs), max(secs)
        x = len(days) - 1
        f["dropout"] = _dropout(rhythm.p_alive(x, (last - first) / DAY, (now - first) / DAY))
        gaps = [g for a, b in zip(secs, secs[1:], strict=False) if (g := (b - a) / DAY) > 0.5]
        typical = _median(gaps) if gaps else rhythm.mean_gap_days
        since = (now - secs[-1]) / DAY
        f["overdue"] = math.log1p(since / max(typical, 1.0))
        if len(gaps) >= 3:
            earlier = _median(gaps[:-1])
            f["gap_stretch"] = max(0.0, math.log(max(gaps[-1], 1.0) / max(earlier, 1.0)))
        if len(baskets) >= 4:
            before = _median(baskets[:-2])
            if before > 0:
                f["basket_shrink"] = max(0.0, 1.0 - (baskets[-1] + baskets[-2]) / 2 / before)
        f["spend_decline"] = _spend_decline(stamps, purchases, now)
    scores = inp.scores
    if scores and scores[-1][0] > as_of:
        scores = [(t, s) for t, s in scores if t <= as_of]
    if scores and as_of - scores[-1][0] <= SCORE_MEMORY:
        latest = scores[-1][1]
        if latest <= 6:
            f["detractor"] = (7 - latest) / 7
        elif latest <= 8:
            f["passive"] = 1.0
        else:
            f["promoter"] = 1.0
        if len(scores) > 1:
            f["falling_score"] = max(0, scores[-2][1] - latest) / 10
    for c in inp.complaints:
        if c.status_at < as_of - COMPLAINT_MEMORY or (c.opened_at and c.opened_at > as_of):
            continue
        if c.is_open:
            late = c.opened_at is not None and as_of - c.opened_at > REPLY_STANDARD
            key = "no_reply_24h" if late else "open_complaint"
            f[key] = min(2.0, f[key] + (1.5 if c.severity == "major" else 1.0))
        elif c.breached(as_of):
            f["slow_resolution"] = min(2.0, f["slow_resolution"] + 1.0)
        else:
            f["quick_resolution"] = min(2.0, f["quick_resolution"] + 1.0)
    return f


def assess(inp: ChurnInputs, as_of: datetime, model: ChurnModel) -> Assessment:
    """Churn risk within ``model.horizon_days`` as of ``as_of``, with its reasons.

    ``risk = 1 / (1 + exp(-(intercept + sum(w_i * x_i))))``; a reason is named
    when its features add at least ``reason_min`` to the log-odds.
    """
    f = features(inp, as_of, model.rhythm)
    churn, gone = model.churn, model.gone
    strength: dict[str, float] = {}
    if gone is not None and churn.in_feature_order and gone.in_feature_order:
        # One pass over the few non-zero features; the sums run in the weights' order,
        # so this is the general path below to the bit.
        z, z_gone = churn.intercept, gone.intercept
        weights, weights_gone = churn.weights, gone.weights
        for name, x in f.items():
            if not x:
                continue
            w = weights.get(name)
            if w is not None:
                z += w * x
                reason = FEATURES[name]
                if reason is not None and w * x > 0:
                    strength[reason] = strength.get(reason, 0.0) + w * x
            w = weights_gone.get(name)
            if w is not None:
                z_gone += w * x
        risk, p_alive = _sigmoid(z), 1.0 - _sigmoid(z_gone)
    else:
        for name, x in f.items():
            part = churn.weights.get(name, 0.0) * x
            reason = FEATURES[name]
            if reason is not None and part > 0:
                strength[reason] = strength.get(reason, 0.0) + part
        risk = _sigmoid(churn.log_odds(f))
        if gone is not None:
            p_alive = 1.0 - _sigmoid(gone.log_odds(f))
        else:
            p_alive = 1.0 - _undropout(f["dropout"])
    reasons = sorted((r for r, s in strength.items() if s >= model.reason_min),
                     key=lambda r: (-strength[r], r))  # fmt: skip
    return Assessment(round(risk, 6), reasons, round(p_alive, 6), as_of)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def _dropout(p_alive: float) -> float:
    """P(dead) as log-odds clipped to [-8, 8], scaled to [0, 1]: 0 is surely alive."""
    p = min(max(1.0 - p_alive, 1e-6), 1 - 1e-6)
    return (max(-8.0, min(8.0, math.log(p / (1 - p)))) + 8.0) / 16.0


def _undropout(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-(x * 16.0 - 8.0)))


def _spend_decline(stamps: Sequence[float], purchases: Sequence[tuple[datetime, float]],
                   now: float) -> float:  # fmt: skip
    """Share by which spend in the last 90 days fell against the 90 before.

    When the 90 days before are empty too, the customer's average 90 days
    before that is the reference, so a customer who stopped buying long ago
    still shows the whole fall rather than none. Times as epoch seconds
    (``stamps`` are the purchases' times, ``now`` the time it is read at).
    """
    recent_from, prior_from = now - 90 * DAY, now - 180 * DAY
    recent = prior = older = 0.0
    first: float | None = None
    for at, (_, amount) in zip(stamps, purchases, strict=True):
        if at > now:
            continue
        if first is None or at < first:
            first = at
        if at > recent_from:
            recent += amount
        elif at > prior_from:
            prior += amount
        else:
            older += amount
    if prior <= 0 and first is not None and older > 0:
        span = (prior_from - first) / DAY
        prior = older * 90 / max(span, 90.0)
    if prior <= 0:
        return 0.0
    return max(0.0, min(1.0, 1 - recent / prior))


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
    PeriodChurn(lost=200, rate=0.06060606060606061, convention='end')
    """
    lost = at_start - (at_end - new)
    denominator = at_end if divide_by == "end" else at_start
    if denominator <= 0:
        raise ValueError(f"customers_at_{divide_by} must be positive")
    return PeriodChurn(lost, lost / denominator, divide_by)


def churn_loss(revenue_lost: Decimal, margin: Decimal) -> Decimal:
    """Revenue lost with the churned customers times profit margin."""
    return revenue_lost * margin

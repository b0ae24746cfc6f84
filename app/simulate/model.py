"""A customer base that behaves like the one in shared/DOMAIN.md.

- Spend is Pareto-distributed (shape 1.16: about 20% of customers bring about
  80% of revenue).
- Each customer buys on its own rhythm (log-normal gap around its own mean)
  until it silently churns; churn causes follow the source's split of why
  customers leave (68% felt ignored -> service, 14% product quality, 9%
  competitor price, 5% needs changed -> benefit, 3% moved and 1% died ->
  natural).
- Survey scores follow satisfaction; complaints lower it and their
  resolution restores it by the repurchase-intention figures (resolved
  quickly 82%/95%, resolved 54%/74%, not resolved 19%/46% for major/minor).
- A small share of events arrive late, twice, or malformed.

Everything is driven by one seed and the simulated clock, so a run is
reproducible and its ground truth (who churned when, and why) is exact.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

PARETO_SHAPE = 1.16
CHURN_CAUSES = (("service", 68), ("product", 14), ("price", 9), ("benefit", 5), ("natural", 4))
COMPLAINT_CATEGORIES = ("product", "price", "service", "benefit", "policy", "other")
REPURCHASE = {  # (resolution, severity) -> repurchase intention, shared/DOMAIN.md
    ("quick", "major"): 0.82, ("quick", "minor"): 0.95,
    ("slow", "major"): 0.54, ("slow", "minor"): 0.74,
    ("never", "major"): 0.19, ("never", "minor"): 0.46,
}  # fmt: skip
REGIONS = ("eu", "us", "apac")
CHANNELS = ("web", "store", "partner")
PRODUCTS = ("broadband", "mobile", "tv")
CURRENCIES = (("EUR", 0.7), ("USD", 0.2), ("GBP", 0.1))


@dataclass
class SimCustomer:
    """One simulated customer and its hidden truth."""

    customer_id: str
    weight: float
    mean_gap_days: float
    satisfaction: float
    respondents: list[str | None]
    segment: dict[str, str]
    currency: str
    churn_at: datetime | None = None
    churn_cause: str | None = None
    complaints: int = 0
    joined_at: datetime | None = None
    replaced: bool = False


@dataclass(frozen=True)
class SimEvent:
    """One record to publish: which input topic, its key and value bytes."""

    kind: str
    key: bytes
    value: bytes
    occurred_at: datetime
    fault: str | None = None


class Simulation:
    """Yields events in simulated time order for ``customers`` customers."""

    def __init__(
        self, customers: int, seed: int, start: datetime, run_id: str = "sim",
        late_share: float = 0.02, duplicate_share: float = 0.01, malformed_share: float = 0.005,
    ) -> None:  # fmt: skip
        self.rnd = random.Random(seed)
        self.run_id = run_id
        self.start = start
        self.late_share, self.duplicate_share = late_share, duplicate_share
        self.malformed_share = malformed_share
        self.customers = [self._customer(i) for i in range(customers)]
        self._queue: list[tuple[datetime, int, int, str]] = []
        self._tick = 0
        self._ids = 0
        for idx, c in enumerate(self.customers):
            first = start + timedelta(days=self.rnd.uniform(0, c.mean_gap_days))
            self._push(first, idx, "purchase")

    def _customer(self, i: int, joined: datetime | None = None) -> SimCustomer:
        rnd = self.rnd
        joined = joined or self.start
        weight = rnd.paretovariate(PARETO_SHAPE)
        tier = "platinum" if weight > 8 else "gold" if weight > 3 else "standard"
        n_resp = 1 if rnd.random() < 0.8 else rnd.randint(2, 4)
        respondents: list[str | None] = [None] if n_resp == 1 else [f"r{j}" for j in range(n_resp)]
        currency = rnd.choices([c for c, _ in CURRENCIES], [w for _, w in CURRENCIES])[0]
        churn_days = rnd.expovariate(1 / 240)
        return SimCustomer(
            customer_id=f"cust-{i:06d}",
            weight=weight,
            mean_gap_days=max(2.0, rnd.lognormvariate(math.log(21), 0.6)),
            satisfaction=min(1.0, max(0.0, rnd.betavariate(5, 2))),
            respondents=respondents,
            segment={
                "tier": tier,
                "region": rnd.choice(REGIONS),
                "channel": rnd.choice(CHANNELS),
                "product": rnd.choice(PRODUCTS),
            },  # fmt: skip
            currency=currency,
            churn_at=joined + timedelta(days=churn_days),
            churn_cause=self._cause(),
            joined_at=joined,
        )

    def _push(self, at: datetime, idx: int, action: str) -> None:
        self._tick += 1
        heapq.heappush(self._queue, (at, self._tick, idx, action))

    def _id(self) -> str:
        self._ids += 1
        return f"{self.run_id}-{self._ids:09d}"

    def events(self) -> Iterator[SimEvent]:
        """Events forever (or until every customer has churned), in event-time order."""
        while self._queue:
            at, _, idx, action = heapq.heappop(self._queue)
            c = self.customers[idx]
            for ev in self._act(c, idx, at, action):
                yield from self._faults(ev)

    def _act(self, c: SimCustomer, idx: int, at: datetime, action: str) -> list[SimEvent]:
        rnd = self.rnd
        churned = c.churn_at is not None and at >= c.churn_at
        if churned and not c.replaced:
            # Acquisition keeps the base steady: a new customer for each one lost.
            c.replaced = True
            self.customers.append(self._customer(len(self.customers), at))
            self._push(at + timedelta(days=rnd.uniform(0, 3)), len(self.customers) - 1, "purchase")
        out: list[SimEvent] = []
        if action == "purchase":
            if churned:
                # Silent churn: no more purchases; a parting survey sometimes.
                if rnd.random() < 0.3:
                    out.append(self._survey(c, at, max(0.0, c.satisfaction - 0.5)))
                return out
            amount = Decimal(str(round(20 * c.weight * rnd.uniform(0.5, 1.5), 2)))
            if rnd.random() < 0.03:
                amount = (-amount / 2).quantize(Decimal("0.01"))  # a partial refund
            out.append(self._event(c, "purchase", at, order_id=f"o-{self._id()}",
                                   amount=str(amount), currency=c.currency))  # fmt: skip
            if rnd.random() < 0.06:
                self._push(at + timedelta(hours=rnd.uniform(1, 72)), idx, "complain")
            if rnd.random() < 0.35:
                self._push(at + timedelta(days=rnd.uniform(1, 5)), idx, "survey")
            gap = rnd.lognormvariate(math.log(c.mean_gap_days), 0.4)
            self._push(at + timedelta(days=gap), idx, "purchase")
        elif action == "survey":
            out.append(self._survey(c, at, c.satisfaction))
        elif action == "complain":
            cid = f"k-{self._id()}"
            severity = "major" if rnd.random() < 0.3 else "minor"
            category = rnd.choice(COMPLAINT_CATEGORIES)
            c.complaints += 1
            c.satisfaction = max(0.0, c.satisfaction - (0.35 if severity == "major" else 0.15))
            out.append(self._complaint(c, at, cid, "opened", category, severity))
            r = rnd.random()
            resolution = "quick" if r < 0.6 else "slow" if r < 0.9 else "never"
            if resolution != "never":
                delay = rnd.uniform(1, 20) if resolution == "quick" else rnd.uniform(30, 240)
                resolved_at = at + timedelta(hours=delay)
                if resolution == "slow" and rnd.random() < 0.5:
                    out_at = at + timedelta(hours=rnd.uniform(24, delay))
                    out.append(self._complaint(c, out_at, cid, "escalated", category, severity))
                out.append(self._complaint(c, resolved_at, cid, "resolved", category, severity))
            # Resolution decides whether the customer stays: the repurchase figures.
            if rnd.random() > REPURCHASE[(resolution, severity)]:
                soon = at + timedelta(days=rnd.uniform(5, 45))
                if c.churn_at is None or soon < c.churn_at:
                    c.churn_at, c.churn_cause = (
                        soon,
                        category
                        if category in ("product", "price", "service", "benefit", "policy")
                        else "service",
                    )
            elif resolution == "quick":
                c.satisfaction = min(1.0, c.satisfaction + 0.25)
            self._push(at + timedelta(days=rnd.uniform(2, 10)), idx, "survey")
        return sorted(out, key=lambda e: e.occurred_at)

    def _cause(self) -> str:
        return self.rnd.choices([k for k, _ in CHURN_CAUSES], [w for _, w in CHURN_CAUSES])[0]

    def _survey(self, c: SimCustomer, at: datetime, satisfaction: float) -> SimEvent:
        score = int(min(10, max(0, round(satisfaction * 10 + self.rnd.gauss(0, 1.2)))))
        return self._event(c, "survey", at, score=score,
                           respondent_id=self.rnd.choice(c.respondents),
                           survey_id="nps-relationship")  # fmt: skip

    def _complaint(
        self, c: SimCustomer, at: datetime, cid: str, status: str, category: str, severity: str
    ) -> SimEvent:
        return self._event(c, "complaint", at, complaint_id=cid, status=status,
                           category=category, severity=severity)  # fmt: skip

    def _event(self, c: SimCustomer, kind: str, at: datetime, **fields: Any) -> SimEvent:
        body = {"event_type": kind, "event_id": self._id(), "customer_id": c.customer_id,
                "occurred_at": at.isoformat(), "schema_version": 1, "segment": c.segment,
                **{k: v for k, v in fields.items() if v is not None}}  # fmt: skip
        return SimEvent(kind, c.customer_id.encode(), json.dumps(body).encode(), at)

    def _faults(self, ev: SimEvent) -> Iterator[SimEvent]:
        r = self.rnd.random()
        if r < self.malformed_share:
            broken = self.rnd.choice([ev.value[: len(ev.value) // 2], b"\xff" + ev.value,
                                      ev.value.replace(b'"schema_version": 1', b'"schema_version": 9')])  # fmt: skip
            yield SimEvent(ev.kind, ev.key, broken, ev.occurred_at, "malformed")
            return
        if r < self.malformed_share + self.late_share:
            # Delivered now, but it happened days ago (a delayed upstream batch).
            body = json.loads(ev.value)
            late_at = ev.occurred_at - timedelta(days=self.rnd.uniform(1, 10))
            body["occurred_at"] = late_at.isoformat()
            yield SimEvent(ev.kind, ev.key, json.dumps(body).encode(), late_at, "late")
            return
        yield ev
        if r > 1 - self.duplicate_share:
            yield SimEvent(ev.kind, ev.key, ev.value, ev.occurred_at, "duplicate")

    def ground_truth(self, until: datetime) -> list[dict[str, Any]]:
        """Who churned by ``until``, when and why (for churn-risk evaluation)."""
        rows = []
        for c in self.customers:
            churned = c.churn_at is not None and c.churn_at <= until
            rows.append({
                "customer_id": c.customer_id, "churned": churned,
                "churn_at": c.churn_at.isoformat() if churned and c.churn_at else None,
                "cause": c.churn_cause if churned else None,
                "weight": round(c.weight, 4), "tier": c.segment["tier"],
                "complaints": c.complaints,
                "joined_at": c.joined_at.isoformat() if c.joined_at else None,
            })  # fmt: skip
        return rows

"""A customer base that behaves like the one in shared/DOMAIN.md, and leaves for causes.

Why it is built this way: the simulator exists to prove (or disprove) the
churn score, so churn must have causes a model could see in principle, and
nothing may be published before it happens.

- Spend is Pareto-distributed (shape 1.16: about 20% of customers bring about
  80% of revenue); each customer buys on its own rhythm (log-normal gaps).
- Bad experiences (*incidents*) happen at ``ChurnMix.incident_rate`` per
  customer-year. Only ``complain_share`` (1 in 10, the source's 1:9) turn into
  a complaint; the rest stay silent but lower satisfaction, which later
  survey scores show. Whether the customer then leaves follows the TARP
  repurchase-intention figures of DOMAIN.md (did not complain 9%/37%,
  complained and not resolved 19%/46%, resolved 54%/74%, resolved quickly
  82%/95%, major/minor), scaled by ``intention_to_behaviour`` because stated
  intention overstates what people do. A complaint not answered within 24 h
  (slow or never resolved) and a silent incident both count as "felt
  ignored" (cause ``service``, 68% of churn in the source).
- Competitors' prices (``price``), changed needs (``benefit``) and natural
  churn (moved, closed down, died: ``natural``) arrive as background hazards
  independent of satisfaction; natural churn gives no signal at all.
- Most customers who decide to leave fade first (``leadup_share``): purchase
  gaps stretch and baskets shrink for 20-75 days before the last purchase.
- Complaint lifecycle steps (escalation, resolution) and surveys are
  scheduled at their own simulated times and emitted only then; only the
  configured late share arrives after its ``occurred_at``.
- Each lost customer is replaced by a new one (a steady base), so a period's
  churn can be read the way DOMAIN.md defines it.

With the defaults (measured over seeds 1-5, 2,000 customers, one year; see
tests/unit/simulate/test_model.py): overall NPS about +30, annual churn about
20% of the starting base, the top fifth of customers about 80% of revenue.
Everything is driven by one seed and the simulated clock, so a run is
reproducible and its ground truth (who churned when, and why) is exact.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

PARETO_SHAPE = 1.16
CAUSES = ("service", "product", "price", "benefit", "policy", "natural")
COMPLAINT_CATEGORIES = ("product", "price", "service", "benefit", "policy", "other")
# Repurchase intention of dissatisfied customers, shared/DOMAIN.md (TARP).
REPURCHASE = {
    ("silent", "major"): 0.09, ("silent", "minor"): 0.37,
    ("never", "major"): 0.19, ("never", "minor"): 0.46,
    ("slow", "major"): 0.54, ("slow", "minor"): 0.74,
    ("quick", "major"): 0.82, ("quick", "minor"): 0.95,
}  # fmt: skip
REGIONS = ("eu", "us", "apac")
CHANNELS = ("web", "store", "partner")
PRODUCTS = ("broadband", "mobile", "tv")
CURRENCIES = (("EUR", 0.7), ("USD", 0.2), ("GBP", 0.1))
YEAR_DAYS = 365.0


@dataclass(frozen=True)
class ChurnMix:
    """Why customers leave, as yearly rates per customer; the defaults are documented above."""

    incident_rate: float = 0.5  # bad experiences per customer-year
    complain_share: float = 0.1  # 1 in 10 dissatisfied customers complains (DOMAIN: 1:9)
    major_share: float = 0.3
    product_share: float = 0.2  # incidents about the product; the rest are about service
    intention_to_behaviour: float = 0.5  # share of a lost repurchase intention that leaves
    quick_share: float = 0.6  # complaints answered and resolved within 24 h
    slow_share: float = 0.3  # resolved after 24 h; the rest are never resolved
    offer_rate: float = 0.15  # competitors' offers per customer-year; taken with P = 1 - satisfaction
    benefit_rate: float = 0.012  # the customer's needs changed (per year)
    natural_rate: float = 0.008  # moved, closed down, died: no signal (per year)
    leadup_share: float = 0.75  # share of leavers whose purchases fade before they go
    decide_days: tuple[float, float] = (5.0, 60.0)  # from a bad experience to the decision
    leadup_days: tuple[float, float] = (30.0, 120.0)  # how long the fading lasts
    survey_share: float = 0.3  # purchases followed by a relationship survey
    recovery_days: float = 90.0  # half-life of a satisfaction drop


@dataclass
class SimCustomer:
    """One simulated customer and its hidden truth."""

    idx: int
    customer_id: str
    weight: float
    mean_gap_days: float
    baseline: float  # satisfaction it returns to
    satisfaction: float
    satisfaction_at: datetime
    respondents: list[str | None]
    segment: dict[str, str]
    currency: str
    joined_at: datetime
    decided_at: datetime | None = None  # when it decided to leave (hidden)
    churn_at: datetime | None = None  # its last day as a customer
    churn_cause: str | None = None
    fading_from: datetime | None = None  # lead-up: purchases fade from here to churn_at
    stretch: float = 1.0
    shrink: float = 1.0
    complaints: int = 0
    incidents: int = 0
    replaced: bool = False


@dataclass(frozen=True)
class SimEvent:
    """One record to publish: which input topic, its key and value bytes.

    ``emitted_at`` is the simulated time it is published at; it is never
    before ``occurred_at`` (a late event was published after it happened).
    """

    kind: str
    key: bytes
    value: bytes
    occurred_at: datetime
    fault: str | None = None
    emitted_at: datetime | None = None


@dataclass(order=True)
class _Action:
    at: datetime
    tick: int
    idx: int = field(compare=False)
    kind: str = field(compare=False)
    data: dict[str, Any] = field(compare=False, default_factory=dict)


class Simulation:
    """Yields events in simulated time order for ``customers`` customers."""

    def __init__(
        self, customers: int, seed: int, start: datetime, run_id: str = "sim",
        late_share: float = 0.02, duplicate_share: float = 0.01, malformed_share: float = 0.005,
        mix: ChurnMix | None = None,
    ) -> None:  # fmt: skip
        self.rnd = random.Random(seed)
        self.run_id = run_id
        self.start = start
        self.mix = mix or ChurnMix()
        self.late_share, self.duplicate_share = late_share, duplicate_share
        self.malformed_share = malformed_share
        self.clock = start
        self._queue: list[_Action] = []
        self._tick = 0
        self._ids = 0
        self.customers: list[SimCustomer] = []
        for _ in range(customers):
            self._join(start)

    # -- population ------------------------------------------------------------------

    def _join(self, at: datetime) -> None:
        rnd = self.rnd
        idx = len(self.customers)
        weight = rnd.paretovariate(PARETO_SHAPE)
        tier = "platinum" if weight > 8 else "gold" if weight > 3 else "standard"
        n_resp = 1 if rnd.random() < 0.8 else rnd.randint(2, 4)
        respondents: list[str | None] = [None] if n_resp == 1 else [f"r{j}" for j in range(n_resp)]
        currency = rnd.choices([c for c, _ in CURRENCIES], [w for _, w in CURRENCIES])[0]
        # Most customers are content; a few are loyal only for lack of choice.
        baseline = rnd.betavariate(2.5, 2.5) if rnd.random() < 0.08 else rnd.betavariate(10, 1.4)
        c = SimCustomer(
            idx=idx, customer_id=f"cust-{idx:06d}", weight=weight,
            mean_gap_days=max(2.0, rnd.lognormvariate(math.log(21), 0.6)),
            baseline=baseline, satisfaction=baseline, satisfaction_at=at,
            respondents=respondents,
            segment={"tier": tier, "region": rnd.choice(REGIONS),
                     "channel": rnd.choice(CHANNELS), "product": rnd.choice(PRODUCTS)},
            currency=currency, joined_at=at,
        )  # fmt: skip
        self.customers.append(c)
        self._push(at + timedelta(days=rnd.uniform(0, min(c.mean_gap_days, 30))), idx, "purchase")
        self._push(at + self._exp_days(self.mix.incident_rate), idx, "incident")
        background = self.mix.offer_rate + self.mix.benefit_rate + self.mix.natural_rate
        self._push(at + self._exp_days(background), idx, "background")

    def _exp_days(self, per_year: float) -> timedelta:
        if per_year <= 0:
            return timedelta(days=1e6)
        return timedelta(days=self.rnd.expovariate(per_year / YEAR_DAYS))

    def _push(self, at: datetime, idx: int, kind: str, **data: Any) -> None:
        self._tick += 1
        heapq.heappush(self._queue, _Action(at, self._tick, idx, kind, data))

    def _id(self) -> str:
        self._ids += 1
        return f"{self.run_id}-{self._ids:09d}"

    # -- the event loop --------------------------------------------------------------

    def events(self) -> Iterator[SimEvent]:
        """Events forever, in the order they are published (simulated time)."""
        while self._queue:
            action = heapq.heappop(self._queue)
            self.clock = action.at
            c = self.customers[action.idx]
            for ev in getattr(self, f"_on_{action.kind}")(c, action):
                yield from self._faults(ev)

    def _gone(self, c: SimCustomer, at: datetime) -> bool:
        return c.churn_at is not None and at >= c.churn_at

    def _leave(self, c: SimCustomer, at: datetime, cause: str, leadup: bool) -> None:
        """The customer decides to leave at ``at``; with a lead-up it fades for a while first."""
        if c.decided_at is not None or self._gone(c, at):
            return
        c.decided_at, c.churn_cause = at, cause
        if leadup:
            c.fading_from = at
            c.stretch = self.rnd.uniform(1.6, 3.0)
            c.shrink = self.rnd.uniform(0.35, 0.7)
            c.churn_at = at + timedelta(days=self.rnd.uniform(*self.mix.leadup_days))
        else:
            c.churn_at = at
        self._push(c.churn_at, c.idx, "churn")

    def _on_churn(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        if not c.replaced:
            # Acquisition keeps the base steady: a new customer for each one lost.
            c.replaced = True
            self._join(a.at + timedelta(days=self.rnd.uniform(0, 3)))
        if self.rnd.random() < 0.1:  # an exit survey, sometimes
            return [self._survey(c, a.at + timedelta(days=self.rnd.uniform(1, 7)),
                                 self._satisfaction(c, a.at) - 0.3, exit_survey=True)]  # fmt: skip
        return []

    def _on_purchase(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        if self._gone(c, a.at):
            return []
        rnd, mix = self.rnd, self.mix
        fading = c.fading_from is not None and a.at >= c.fading_from
        basket = c.shrink if fading else 1.0
        amount = Decimal(str(round(20 * c.weight * rnd.uniform(0.5, 1.5) * basket, 2)))
        if rnd.random() < 0.03:
            amount = (-amount / 2).quantize(Decimal("0.01"))  # a partial refund
        out = [self._event(c, "purchase", a.at, order_id=f"o-{self._id()}",
                           amount=str(amount), currency=c.currency)]  # fmt: skip
        if rnd.random() < mix.survey_share:
            self._push(a.at + timedelta(days=rnd.uniform(1, 5)), a.idx, "survey")
        gap = rnd.lognormvariate(math.log(c.mean_gap_days), 0.4) * (c.stretch if fading else 1.0)
        self._push(a.at + timedelta(days=gap), a.idx, "purchase")
        return out

    def _on_survey(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        if self._gone(c, a.at):
            return []
        return [self._survey(c, a.at, self._satisfaction(c, a.at))]

    def _on_incident(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        """A bad experience: most customers say nothing; 1 in 10 complains."""
        self._push(a.at + self._exp_days(self.mix.incident_rate), a.idx, "incident")
        if self._gone(c, a.at) or c.decided_at is not None:
            return []
        rnd, mix = self.rnd, self.mix
        c.incidents += 1
        severity = "major" if rnd.random() < mix.major_share else "minor"
        about = "product" if rnd.random() < mix.product_share else "service"
        self._hurt(c, a.at, 0.45 if severity == "major" else 0.25)
        if rnd.random() >= mix.complain_share:
            # Silent: nobody reaches out, so a leaver felt ignored unless the product failed it.
            self._maybe_leave(c, a.at, ("silent", severity), "service" if about == "service"
                              else "product")  # fmt: skip
            return []
        c.complaints += 1
        cid = f"k-{self._id()}"
        category = about if rnd.random() < 0.7 else rnd.choice(COMPLAINT_CATEGORIES)
        r = rnd.random()
        handling = "quick" if r < mix.quick_share else "slow" if r < mix.quick_share + \
            mix.slow_share else "never"  # fmt: skip
        if handling == "quick":
            self._push(a.at + timedelta(hours=rnd.uniform(1, 20)), a.idx, "resolve",
                       cid=cid, category=category, severity=severity, handling=handling)  # fmt: skip
        elif handling == "slow":
            delay = rnd.uniform(30, 240)
            if rnd.random() < 0.5:
                self._push(a.at + timedelta(hours=rnd.uniform(24, delay)), a.idx, "escalate",
                           cid=cid, category=category, severity=severity)  # fmt: skip
            self._push(a.at + timedelta(hours=delay), a.idx, "resolve",
                       cid=cid, category=category, severity=severity, handling=handling)  # fmt: skip
        else:
            # Never answered: the customer felt ignored.
            self._push(a.at + timedelta(days=rnd.uniform(3, 10)), a.idx, "survey")
            self._maybe_leave(c, a.at + timedelta(hours=24), ("never", severity), "service")
        return [self._complaint(c, a.at, cid, "opened", category, severity)]

    def _on_escalate(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        d = a.data
        return [self._complaint(c, a.at, d["cid"], "escalated", d["category"], d["severity"])]

    def _on_resolve(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        d = a.data
        if d["handling"] == "quick":
            self._hurt(c, a.at, -0.25)  # a quick fix wins most of the goodwill back
        # Not answered within 24 h: the customer felt ignored, whatever it was about.
        cause = d["category"] if d["handling"] == "quick" else "service"
        self._maybe_leave(c, a.at, (d["handling"], d["severity"]),
                          cause if cause in CAUSES[:5] else "service")  # fmt: skip
        if self.rnd.random() < 0.6:  # a transactional survey after the case closes
            self._push(a.at + timedelta(days=self.rnd.uniform(1, 4)), a.idx, "survey")
        return [self._complaint(c, a.at, d["cid"], "resolved", d["category"], d["severity"])]

    def _on_background(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        """A competitor's offer (taken by the dissatisfied), changed needs, or natural causes."""
        mix = self.mix
        self._push(a.at + self._exp_days(mix.offer_rate + mix.benefit_rate + mix.natural_rate),
                   a.idx, "background")  # fmt: skip
        if self._gone(c, a.at) or c.decided_at is not None:
            return []
        r = self.rnd.random() * (mix.offer_rate + mix.benefit_rate + mix.natural_rate)
        if r < mix.offer_rate:
            # Price sensitivity is the flip side of satisfaction: the content stay.
            if self.rnd.random() < 1.0 - self._satisfaction(c, a.at):
                self._leave(c, a.at, "price", self.rnd.random() < 0.8)
        elif r < mix.offer_rate + mix.benefit_rate:
            self._leave(c, a.at, "benefit", self.rnd.random() < 0.6)
        else:
            self._leave(c, a.at, "natural", False)
        return []

    def _maybe_leave(self, c: SimCustomer, at: datetime, key: tuple[str, str], cause: str) -> None:
        mix = self.mix
        p_leave = mix.intention_to_behaviour * (1 - REPURCHASE[key])
        if self.rnd.random() < p_leave:
            decide = at + timedelta(days=self.rnd.uniform(*mix.decide_days))
            self._leave(c, decide, cause, self.rnd.random() < mix.leadup_share)

    def _satisfaction(self, c: SimCustomer, at: datetime) -> float:
        days = max(0.0, (at - c.satisfaction_at).total_seconds() / 86400)
        decay: float = 0.5 ** (days / self.mix.recovery_days)
        return c.baseline + (c.satisfaction - c.baseline) * decay

    def _hurt(self, c: SimCustomer, at: datetime, drop: float) -> None:
        c.satisfaction = min(1.0, max(0.0, self._satisfaction(c, at) - drop))
        c.satisfaction_at = at

    # -- records ---------------------------------------------------------------------

    def _survey(
        self, c: SimCustomer, at: datetime, satisfaction: float, exit_survey: bool = False
    ) -> SimEvent:
        score = int(min(10, max(0, round(satisfaction * 10 + self.rnd.gauss(0, 1.0)))))
        return self._event(c, "survey", at, score=score,
                           respondent_id=self.rnd.choice(c.respondents),
                           survey_id="nps-exit" if exit_survey else "nps-relationship")  # fmt: skip

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
        if ev.occurred_at > self.clock:  # exit surveys are scheduled ahead: publish them then
            self._push(ev.occurred_at, -1, "publish", event=ev)
            return
        now = self.clock
        r = self.rnd.random()
        if r < self.malformed_share:
            broken = self.rnd.choice([ev.value[: len(ev.value) // 2], b"\xff" + ev.value,
                                      ev.value.replace(b'"schema_version": 1', b'"schema_version": 9')])  # fmt: skip
            yield SimEvent(ev.kind, ev.key, broken, ev.occurred_at, "malformed", now)
            return
        if r < self.malformed_share + self.late_share:
            # Published now, but it happened days ago (a delayed upstream batch).
            body = json.loads(ev.value)
            late_at = ev.occurred_at - timedelta(days=self.rnd.uniform(1, 10))
            body["occurred_at"] = late_at.isoformat()
            yield SimEvent(ev.kind, ev.key, json.dumps(body).encode(), late_at, "late", now)
            return
        yield SimEvent(ev.kind, ev.key, ev.value, ev.occurred_at, None, now)
        if r > 1 - self.duplicate_share:
            yield SimEvent(ev.kind, ev.key, ev.value, ev.occurred_at, "duplicate", now)

    def _on_publish(self, c: SimCustomer, a: _Action) -> list[SimEvent]:
        ev: SimEvent = a.data["event"]
        return [ev]

    # -- truth -----------------------------------------------------------------------

    def ground_truth(self, until: datetime) -> list[dict[str, Any]]:
        """Every customer: when it churned (``churned_at``, null if not by ``until``) and why."""
        rows = []
        for c in self.customers:
            churned = c.churn_at is not None and c.churn_at <= until
            rows.append({
                "customer_id": c.customer_id,
                "churned_at": c.churn_at.isoformat() if churned and c.churn_at else None,
                "cause": c.churn_cause if churned else None,
                "joined_at": c.joined_at.isoformat(),
                "weight": round(c.weight, 4), "tier": c.segment["tier"],
                "incidents": c.incidents, "complaints": c.complaints,
            })  # fmt: skip
        return rows

    def oracle(self, as_of: datetime, horizon: timedelta) -> dict[str, float]:
        """The simulator's own churn probability within ``horizon``, from its hidden state.

        Only valid while the clock is at ``as_of`` (decisions after it are not
        known yet). A customer that has decided to leave is certain to (1.0 if
        within the horizon, 0.0 if later); the others carry the background and
        incident hazards. The reference ceiling for any score built on events.
        """
        mix = self.mix
        years = horizon.total_seconds() / 86400 / YEAR_DAYS
        silent = mix.incident_rate * (1 - mix.complain_share) * mix.intention_to_behaviour * (
            mix.major_share * (1 - REPURCHASE[("silent", "major")])
            + (1 - mix.major_share) * (1 - REPURCHASE[("silent", "minor")]))  # fmt: skip
        rate = mix.benefit_rate + mix.natural_rate + silent
        out = {}
        for c in self.customers:
            if c.joined_at > as_of:
                continue
            if c.decided_at is not None and c.decided_at <= as_of and c.churn_at is not None:
                out[c.customer_id] = 1.0 if c.churn_at <= as_of + horizon else 0.0
            else:
                price = mix.offer_rate * (1.0 - self._satisfaction(c, as_of))
                out[c.customer_id] = 1 - math.exp(-(rate + price) * years)
        return out

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from app.domain.events import decode_event
from app.domain.nps import nps_of
from app.errors import InvalidEventError
from app.simulate.model import CAUSES, Simulation

START = datetime(2026, 1, 1, tzinfo=UTC)


def take(sim: Simulation, n: int) -> list:  # type: ignore[type-arg]
    return list(itertools.islice(sim.events(), n))


def test_same_seed_same_traffic() -> None:
    a = [e.value for e in take(Simulation(300, 7, START), 3000)]
    b = [e.value for e in take(Simulation(300, 7, START), 3000)]
    c = [e.value for e in take(Simulation(300, 8, START), 3000)]
    assert a == b and a != c


def test_pareto_spend_top_fifth_brings_most_revenue() -> None:
    revenue: Counter[str] = Counter()
    for e in take(Simulation(3000, 1, START), 60_000):
        if e.kind == "purchase" and e.fault is None:
            body = json.loads(e.value)
            revenue[body["customer_id"]] += float(body["amount"])
    values = sorted(revenue.values(), reverse=True)
    share = sum(values[: len(values) // 5]) / sum(values)
    assert 0.65 < share < 0.92  # about 80/20


def test_events_are_valid_except_injected_faults() -> None:
    faults: Counter[str | None] = Counter()
    kinds: Counter[str] = Counter()
    respondents = set()
    for e in take(Simulation(500, 3, START), 20_000):
        faults[e.fault] += 1
        if e.fault == "malformed":
            try:
                decode_event(e.value)
            except InvalidEventError:
                continue
            raise AssertionError("a malformed event decoded")
        ev = decode_event(e.value)
        kinds[ev.event_type] += 1
        if ev.event_type == "survey" and ev.respondent_id:
            respondents.add(ev.respondent_id)
        if ev.event_type == "complaint":
            assert ev.category in {"product", "price", "service", "benefit", "policy", "other"}
    assert set(kinds) == {"survey", "purchase", "complaint"}
    assert faults["late"] > 0 and faults["duplicate"] > 0 and faults["malformed"] > 0
    assert faults[None] > 0.9 * sum(faults.values())
    assert respondents, "some accounts have several respondents"


def year(seed: int, customers: int = 1500) -> tuple[Simulation, list]:  # type: ignore[type-arg]
    sim = Simulation(customers, seed, START)
    end = START + timedelta(days=365)
    events = list(itertools.takewhile(lambda e: e.emitted_at <= end, sim.events()))
    return sim, events


@pytest.mark.parametrize("seed", [1, 2])
def test_realistic_levels_nps_churn_and_pareto(seed: int) -> None:
    """Overall NPS +20..+40, annual churn 10-30% of the starting base, top fifth ~80% revenue."""
    sim, events = year(seed)
    scores = [json.loads(e.value)["score"] for e in events if e.kind == "survey" and not e.fault]
    assert 20 <= nps_of(scores) <= 40  # type: ignore[operator]
    end = START + timedelta(days=365)
    starters = sim.customers[:1500]
    churned = sum(1 for c in starters if c.churn_at is not None and c.churn_at <= end)
    assert 0.10 <= churned / 1500 <= 0.30
    revenue: Counter[str] = Counter()
    for e in events:
        if e.kind == "purchase" and not e.fault:
            body = json.loads(e.value)
            revenue[body["customer_id"]] += float(body["amount"])
    values = sorted(revenue.values(), reverse=True)
    assert 0.65 <= sum(values[: len(values) // 5]) / sum(values) <= 0.92


def test_nothing_is_published_before_it_happens() -> None:
    _, events = year(3, 800)
    assert all(e.emitted_at is not None for e in events)
    early = [e for e in events if e.emitted_at < e.occurred_at]
    assert early == []
    # Only the injected late share arrives noticeably after it happened.
    late = [e for e in events if e.emitted_at - e.occurred_at > timedelta(hours=1)]
    assert {e.fault for e in late} <= {"late"}
    assert len(late) <= 0.03 * len(events)
    # Complaint steps are separate records, published at their own times.
    steps: dict[str, list[tuple[str, object]]] = {}
    for e in events:
        if e.kind == "complaint" and e.fault is None:
            body = json.loads(e.value)
            steps.setdefault(body["complaint_id"], []).append((body["status"], e.emitted_at))
    resolved = [s for s in steps.values() if [k for k, _ in s][:1] == ["opened"] and len(s) > 1]
    assert resolved and all(s[0][1] < s[-1][1] for s in resolved)


def test_dissatisfaction_is_where_the_causes_are() -> None:
    """Detractors concentrate among customers with bad experiences; they churn more."""
    sim, events = year(4)
    by_customer: dict[str, list[int]] = {}
    for e in events:
        if e.kind == "survey" and not e.fault:
            body = json.loads(e.value)
            by_customer.setdefault(body["customer_id"], []).append(body["score"])
    hit = {c.customer_id for c in sim.customers if c.incidents}
    scores_hit = [s for cid, ss in by_customer.items() if cid in hit for s in ss]
    scores_not = [s for cid, ss in by_customer.items() if cid not in hit for s in ss]
    assert nps_of(scores_hit) < nps_of(scores_not) - 20  # type: ignore[operator]
    end = START + timedelta(days=365)
    gone = [c for c in sim.customers[:1500] if c.churn_at and c.churn_at <= end]
    rate_hit = sum(1 for c in gone if c.incidents) / max(1, sum(1 for c in sim.customers[:1500] if c.incidents))
    rate_not = sum(1 for c in gone if not c.incidents) / max(1, sum(1 for c in sim.customers[:1500] if not c.incidents))
    assert rate_hit > 2 * rate_not
    # 1 in 10 bad experiences is voiced as a complaint.
    incidents = sum(c.incidents for c in sim.customers)
    complaints = sum(c.complaints for c in sim.customers)
    assert 0.06 <= complaints / incidents <= 0.14
    # Most leavers fade first (gaps stretch, baskets shrink); natural churn never does.
    fading = [c for c in gone if c.fading_from is not None]
    assert len(fading) > 0.5 * len(gone) and all(c.churn_cause != "natural" for c in fading)
    causes = Counter(c.churn_cause for c in gone)
    assert causes["service"] > 0.5 * len(gone) and causes["natural"] < 0.1 * len(gone)


def test_ground_truth_names_who_churned_when_and_why() -> None:
    sim, events = year(5, 600)
    end = events[-1].emitted_at
    truth = sim.ground_truth(end)
    churned = [r for r in truth if r["churned_at"]]
    assert churned and all(r["cause"] in CAUSES for r in churned)
    assert all(datetime.fromisoformat(r["churned_at"]) <= end for r in churned)
    assert len(truth) > 600, "lost customers are replaced by new ones"
    # After its churn date a customer buys nothing more.
    gone_at = {r["customer_id"]: datetime.fromisoformat(r["churned_at"]) for r in churned}
    for e in events:
        if e.kind == "purchase" and e.fault is None:
            body = json.loads(e.value)
            assert body["customer_id"] not in gone_at or e.occurred_at <= gone_at[body["customer_id"]]

import itertools
import json
from collections import Counter
from datetime import UTC, datetime

from app.domain.events import decode_event
from app.errors import InvalidEventError
from app.simulate.model import Simulation

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


def test_ground_truth_names_who_churned_when_and_why() -> None:
    sim = Simulation(400, 5, START)
    events = take(sim, 30_000)
    truth = sim.ground_truth(events[-1].occurred_at)
    churned = [r for r in truth if r["churned"]]
    assert churned and all(r["churn_at"] and r["cause"] for r in churned)
    assert {r["cause"] for r in churned} <= {"service", "product", "price", "benefit", "policy",
                                              "natural"}  # fmt: skip
    assert len(truth) > 400, "lost customers are replaced by new ones"

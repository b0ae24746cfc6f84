"""Churn KPIs across partitions and the safety-line alert, without a broker."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

from app.domain import churn_kpi
from app.domain.customer import CustomerState, Lapse
from app.metrics import ServiceMetrics
from app.settings import load_settings
from app.streams.churnkpis import ChurnKpis
from app.streams.readmodel import ReadModel
from app.streams.summaries import Received

NOW = datetime(2026, 5, 20, tzinfo=UTC)


class Summaries:
    """What the summaries topic delivered from other workers."""

    def __init__(self) -> None:
        self.remote = Received()


def customer(cid: str, lost: bool) -> CustomerState:
    s = CustomerState(customer_id=cid, first_seen_at=NOW - timedelta(days=400),
                      last_event_at=NOW - timedelta(days=30), value_tier="A")  # fmt: skip
    if lost:
        s.lapsed_at = NOW - timedelta(days=5)
        s.lapses = [Lapse(at=s.lapsed_at, revenue=500)]
    return s


def kpis_with(rows: dict[int, list[CustomerState]]) -> tuple[ChurnKpis, ReadModel, Summaries]:
    settings = load_settings(partitions=2, churn_safety_line={"A": 0.1, "overall": 0.99})
    rm = ReadModel()
    for part, states in rows.items():
        rm.advance(part, NOW, NOW)
        for s in states:
            rm.record(s.customer_id.encode(), part, s, NOW + timedelta(days=1))
    summaries = Summaries()
    return ChurnKpis(settings, ServiceMetrics.create(), rm, summaries), rm, summaries  # type: ignore[arg-type]


def test_report_merges_own_partitions_with_other_workers_summaries() -> None:
    kpis, _, summaries = kpis_with({0: [customer("a", True), customer("b", False)]})
    other, _, _ = kpis_with({1: [customer("c", True), customer("d", False)]})
    asyncio.run(other.recount({1}))
    summaries.remote.receive(1, json.dumps({"churn": other.shared(1)}).encode())
    asyncio.run(kpis.recount({0}))
    report = kpis.report("month", {0}, "overall")
    may = report["rows"][-1]
    assert (may["period"], may["lost"], may["customers_at_start"], may["customers_at_end"]) == \
        ("2026-05", 2, 4, 2)  # fmt: skip
    assert may["churn_rate"] == 1.0 and may["revenue_lost"] == "1000.0"


def test_safety_line_alert_once_from_partition_0_only_when_every_partition_is_counted() -> None:
    kpis, _, summaries = kpis_with({0: [customer("a", True)] + [customer(f"k{i}", False)
                                                                for i in range(5)]})  # fmt: skip
    asyncio.run(kpis.recount({0}))
    assert kpis.safety_line_alerts({0}, NOW) == [], "partition 1 not counted yet"
    summaries.remote.receive(1, json.dumps({"churn": {}}).encode())
    alerts = kpis.safety_line_alerts({0}, NOW)
    assert sorted(a.trigger_event_id for a in alerts) == ["month:2026-05:tier:A",
                                                          "quarter:2026-Q2:tier:A"]  # fmt: skip
    assert kpis.safety_line_alerts({0}, NOW) == [], "once per period and group"
    elsewhere, _, s2 = kpis_with({1: [customer("a", True)]})
    s2.remote.receive(0, json.dumps({"churn": {}}).encode())
    asyncio.run(elsewhere.recount({1}))
    assert elsewhere.safety_line_alerts({1}, NOW) == [], "only the owner of partition 0 speaks"


def test_recount_follows_rows_that_change_and_go() -> None:
    kpis, rm, _ = kpis_with({0: [customer(f"c{i}", lost=i % 3 == 0) for i in range(30)]})

    def expected() -> dict[str, churn_kpi.Counts]:
        rows = [r for r in rm if r.partition == 0]
        return {k: churn_kpi.count(rows, k, NOW, 5) for k in churn_kpi.PERIODS}

    asyncio.run(kpis.recount({0}))
    first = kpis.local[0]
    assert first == expected() and first["month"][("2026-05", "overall")][2] == 10
    won = customer("c0", lost=True)
    won.lapses[0].won_back_at = NOW - timedelta(days=1)
    rm.record(b"c0", 0, won, NOW + timedelta(days=1))  # won back
    rm.record(b"c1", 0, customer("c1", lost=True), NOW + timedelta(days=1))  # lapsed
    rm.drop(b"c2")  # erased
    rm.record(b"c4", 0, customer("c4", lost=False), NOW + timedelta(days=2))  # no change
    asyncio.run(kpis.recount({0}))
    assert kpis.local[0] == expected() != first
    may = kpis.local[0]["month"][("2026-05", "overall")]
    assert (may[2], may[3], may[4]) == (11, 1, 29 - 10)  # c1 lapsed, c0 back, c2 gone


def test_rows_changing_while_a_recount_is_under_way_are_counted_as_they_end_up() -> None:
    rm = ReadModel()
    rm.advance(0, NOW, NOW)
    for i in range(1200):
        rm.record(f"c{i}".encode(), 0, customer(f"c{i}", lost=False), NOW)
    assert rm.kpi_sync(500), "a step takes at most its limit"
    for i in range(0, 1200, 2):  # half of them lapse: some taken in already, some not
        rm.record(f"c{i}".encode(), 0, customer(f"c{i}", lost=True), NOW)
    rm.forget([1])  # another partition revoked meanwhile: nothing of partition 0 goes
    while rm.kpi_sync(500):
        pass
    while rm.kpi_sync(500):  # the next round takes the lapses noted during the first
        pass
    rows = list(rm)
    assert rm.kpi.counts(0, "month", NOW, 5) == churn_kpi.count(rows, "month", NOW, 5)
    assert rm.kpi.counts(0, "month", NOW, 5)[("2026-05", "overall")][2] == 600
    rm.forget([0])
    assert rm.kpi.counts(0, "month", NOW, 5) == {} and not rm.kpi_sync(500)

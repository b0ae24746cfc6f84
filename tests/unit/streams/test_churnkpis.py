"""Churn KPIs across partitions and the safety-line alert, without a broker."""

import json
from datetime import UTC, datetime, timedelta

from app.domain.customer import CustomerState, Lapse
from app.metrics import ServiceMetrics
from app.settings import load_settings
from app.streams.churnkpis import ChurnKpis, Pacer
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
    other.recount({1})
    summaries.remote.receive(1, json.dumps({"churn": other.shared(1)}).encode())
    kpis.recount({0})
    report = kpis.report("month", {0}, "overall")
    may = report["rows"][-1]
    assert (may["period"], may["lost"], may["customers_at_start"], may["customers_at_end"]) == \
        ("2026-05", 2, 4, 2)  # fmt: skip
    assert may["churn_rate"] == 1.0 and may["revenue_lost"] == "1000.0"


def test_safety_line_alert_once_from_partition_0_only_when_every_partition_is_counted() -> None:
    kpis, _, summaries = kpis_with({0: [customer("a", True)] + [customer(f"k{i}", False)
                                                                for i in range(5)]})  # fmt: skip
    kpis.recount({0})
    assert kpis.safety_line_alerts({0}, NOW) == [], "partition 1 not counted yet"
    summaries.remote.receive(1, json.dumps({"churn": {}}).encode())
    alerts = kpis.safety_line_alerts({0}, NOW)
    assert sorted(a.trigger_event_id for a in alerts) == ["month:2026-05:tier:A",
                                                          "quarter:2026-Q2:tier:A"]  # fmt: skip
    assert kpis.safety_line_alerts({0}, NOW) == [], "once per period and group"
    elsewhere, _, s2 = kpis_with({1: [customer("a", True)]})
    s2.remote.receive(0, json.dumps({"churn": {}}).encode())
    elsewhere.recount({1})
    assert elsewhere.safety_line_alerts({1}, NOW) == [], "only the owner of partition 0 speaks"


def test_pacer_keeps_recounts_to_their_share_of_the_time() -> None:
    pacer = Pacer(share=0.05)
    assert pacer.due(0.0)
    pacer.took(10.0, 2.0)  # a recount of 2 CPU-seconds, finished at t = 10 s
    assert not pacer.due(10.0) and not pacer.due(47.9)
    assert pacer.due(48.0)  # 2 s of every 40 s: 5%


def test_recount_reports_the_cpu_it_took() -> None:
    kpis, _, _ = kpis_with({0: [customer(f"c{i}", lost=i % 3 == 0) for i in range(300)]})
    took = kpis.recount({0})
    assert took > 0 and kpis.local[0]  # counted, and timed

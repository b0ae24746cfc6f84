"""Churn risk as of now on the real broker: silence raises risk and alerts with no event sent.

One partition, so every customer shares one stream clock. "quiet" (high value) buys every
10 days, then stops; "ignored" opens a complaint nobody answers; "busy" keeps buying and
so moves stream time on. Neither quiet nor ignored sends anything after that, yet both
alert, and the HTTP views, the churn KPIs and the metrics show them as of now.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.domain.alerts import alert_id

from .harness import Worker, consume_all, event, poll, produce, worker_env

pytestmark = pytest.mark.integration
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def day(d: float) -> str:
    return (T0 + timedelta(days=d)).isoformat()


def purchase(cust: str, d: int, amount: str = "100") -> tuple[str, bytes]:
    return cust, event("purchase", f"{cust}-p{d}", cust, day(d), order_id=f"{cust}-o{d}",
                       amount=amount, currency="EUR")  # fmt: skip


def test_silence_and_unanswered_complaints_alert_without_another_event(
    kafka_broker: str, tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:10]
    env = worker_env(kafka_broker, unique, tmp_path / "data", FEEDBACK_PARTITIONS="1",
                     FEEDBACK_HIGH_VALUE_REVENUE="500", FEEDBACK_CHURN_KPI_INTERVAL="1",
                     # the escalation of these alerts' cases is tested in test_closed_loop
                     FEEDBACK_ALERT_RULES="detractor,silent,complaint_reply_overdue")  # fmt: skip
    topic = {"purchase": env["FEEDBACK_TOPIC_PURCHASES"],
             "complaint": env["FEEDBACK_TOPIC_COMPLAINTS"]}  # fmt: skip
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        poll(lambda: worker.get("/health")[1].get("indexed_partitions") == 1, 60,
             "the read model indexed the partition", worker)  # fmt: skip
        first = [purchase("quiet", d) for d in range(0, 110, 10)]
        first += [purchase("busy", d) for d in range(0, 110, 10)]
        first += [purchase("ignored", 0, "900"),
                  ("ignored", event("complaint", "ignored-c1", "ignored", day(101),
                                    complaint_id="k1", status="opened", category="service",
                                    severity="major"))]  # fmt: skip
        asyncio.run(produce(kafka_broker, [(topic["complaint" if b"complaint" in raw else
                                                  "purchase"], c.encode(), raw)
                                           for c, raw in first]))  # fmt: skip
        poll(lambda: worker.metric("feedback_events_total") >= len(first), 60,
             "the first records processed", worker)  # fmt: skip
        status, quiet = worker.get("/customers/quiet")
        assert status == 200 and quiet["lapsed"] is False and quiet["churn_as_of"] == day(101)[:19] + "Z"
        risk_then = quiet["churn_risk"]

        # Only busy speaks from now on: a purchase every 10 days for 200 more days.
        later = [purchase("busy", d) for d in range(110, 310, 10)]
        asyncio.run(produce(kafka_broker, [(topic["purchase"], c.encode(), raw)
                                           for c, raw in later]))  # fmt: skip
        poll(lambda: worker.metric("feedback_events_total") >= len(first) + len(later), 60,
             "busy's purchases processed", worker)  # fmt: skip

        status, quiet = worker.get("/customers/quiet")
        assert quiet["churn_as_of"] == day(300)[:19] + "Z", "scored as of the stream's now"
        assert quiet["events"] == 11, "quiet sent nothing more"
        assert quiet["lapsed"] is True and quiet["p_alive"] < 0.5
        assert quiet["churn_risk"] > max(0.5, risk_then) and "inactive" in quiet["churn_reasons"]
        status, ignored = worker.get("/customers/ignored")
        assert ignored["sla_breaches"] == 1 and ignored["open_complaint_details"][0]["sla_breached"]

        want = {
            alert_id("silent", "quiet", "quiet-p100"): ("silent", "quiet"),
            alert_id("complaint_reply_overdue", "ignored", "ignored-c1"):
                ("complaint_reply_overdue", "ignored"),
            # One purchase of 900 on day 0 and silence since: lapsed, still high value.
            alert_id("silent", "ignored", "ignored-p0"): ("silent", "ignored"),
        }  # fmt: skip
        alerts = asyncio.run(consume_all(
            kafka_broker, env["FEEDBACK_TOPIC_ALERTS"],
            lambda r: {json.loads(x.value)["alert_id"] for x in r} >= set(want), timeout=60))
        got = {}
        for r in alerts:
            body = json.loads(r.value)
            got[body["alert_id"]] = (body["rule"], body["customer_id"])
        assert got == want, "busy never lapsed; each episode alerted once"
        silent = next(json.loads(r.value) for r in alerts
                      if r.key == b"quiet" and json.loads(r.value)["rule"] == "silent")  # fmt: skip
        assert silent["trigger_event_id"] == "quiet-p100" and silent["p_alive"] < 0.5
        assert silent["value_tier"] == "A" and silent["trailing_revenue"] == "1100"

        status, at_risk = worker.get("/at-risk?limit=5")
        assert at_risk["customers"][0]["customer_id"] == "quiet"
        assert worker.metric("feedback_lapses_total") >= 1
        assert worker.metric("feedback_sweep_rescored_total") > 0

        def quiet_counted() -> bool:
            status, report = worker.get("/churn?period=month&segment=overall")
            lost = sum(r["lost"] for r in report.get("rows", []))
            return status == 200 and lost >= 1

        poll(quiet_counted, 30, "the lapse counted as lost in the monthly KPIs", worker)
        status, report = worker.get("/churn?period=quarter")
        assert status == 200 and report["period"] == "quarter"
        assert {r["group"] for r in report["rows"]} >= {"overall", "tier:A"}
        assert worker.get("/churn?period=week")[0] == 400
        poll(lambda: worker.metric("feedback_churn_lost_customers", period="quarter",
                                   group="overall") >= 1, 30, "churn gauges", worker)  # fmt: skip
    finally:
        worker.stop()

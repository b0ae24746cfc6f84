"""Closing the loop with CRM on the real broker: cases, actions, contact SLA, recovery."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app.domain.alerts import alert_id

from .harness import Worker, consume_all, event, poll, produce, worker_env

pytestmark = pytest.mark.integration


def day(d: float) -> str:
    return f"2026-03-{1 + int(d):02d}T{int((d % 1) * 24):02d}:00:00Z"


def test_actions_move_cases_overdue_escalates_once_and_contacted_detractors_recover(
    kafka_broker: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_broker, uuid.uuid4().hex[:10], tmp_path / "data",
                     FEEDBACK_PARTITIONS="1", FEEDBACK_HIGH_VALUE_REVENUE="1000")  # fmt: skip
    s, p = env["FEEDBACK_TOPIC_SURVEYS"], env["FEEDBACK_TOPIC_PURCHASES"]

    def buy(cust: str, d: float) -> tuple[str, bytes, bytes]:
        return p, cust.encode(), event("purchase", f"{cust}-p{d}", cust, day(d),
                                       order_id=f"o-{cust}-{d}", amount="6000", currency="EUR")

    def answer(cust: str, d: float, score: int) -> tuple[str, bytes, bytes]:
        return s, cust.encode(), event("survey", f"{cust}-s{d}", cust, day(d), score=score)

    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        asyncio.run(produce(kafka_broker, [buy("vip", 0), buy("ok", 0), answer("vip", 1, 9),
                                           answer("vip", 2, 2), answer("ok", 1, 3)]))
        poll(lambda: worker.metric("feedback_events_total") >= 5, 60, "first events", worker)
        vip_alert = alert_id("detractor", "vip", "vip-s2")
        ok_alert = alert_id("detractor", "ok", "ok-s1")
        status, ok = worker.get("/customers/ok")
        assert [(c["alert_id"], c["status"]) for c in ok["cases"]] == [(ok_alert, "open")]

        # CRM contacts "ok" (the CLI a small team uses), and reports an unknown alert.
        ack = subprocess.run([sys.executable, "-m", "app", "alerts", "ack", ok_alert,
                              "--action", "contacted", "--actor", "maria", "--at", day(1.5)],
                             env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert ack.returncode == 0, ack.stderr
        bogus = json.dumps({"event_type": "alert_action", "event_id": "bogus", "alert_id": "nope",
                            "customer_id": "ok", "action": "contacted", "actor": "x",
                            "occurred_at": day(2), "schema_version": 1}).encode()  # fmt: skip
        asyncio.run(produce(kafka_broker, [(env["FEEDBACK_TOPIC_ALERT_ACTIONS"], b"ok", bogus)]))
        poll(lambda: worker.get("/customers/ok")[1]["cases"][0]["status"] == "contacted", 60,
             "the case contacted", worker)  # fmt: skip

        # Time moves on (days 4-7): vip's case is overdue; vip wobbles 7 -> 4; ok recovers.
        asyncio.run(produce(kafka_broker, [buy("clock", 4), answer("ok", 5, 9),
                                           answer("vip", 6, 7), answer("vip", 7, 4)]))
        poll(lambda: worker.metric("feedback_events_total") >= 9, 60, "later events", worker)

        alerts = asyncio.run(consume_all(
            kafka_broker, env["FEEDBACK_TOPIC_ALERTS"],
            lambda r: any(json.loads(x.value)["rule"] == "case_contact_overdue" for x in r)))
        rules = sorted((json.loads(r.value)["rule"], json.loads(r.value)["trigger_event_id"])
                       for r in alerts)  # fmt: skip
        assert rules == [("case_contact_overdue", vip_alert), ("detractor", "ok-s1"),
                         ("detractor", "vip-s2")], "one escalation, no page for 7 -> 4"
        status, vip = worker.get("/customers/vip")
        (case,) = vip["cases"]
        assert case["escalated"] and case["overdue"] and case["later_scores"] == [4]
        status, ok = worker.get("/customers/ok")
        assert ok["recovered_detractors"] == 1 and ok["cases"][0]["recovered_at"] == day(5)
        assert worker.metric("feedback_detractors_recovered_total", group="overall") == 1
        assert worker.metric("feedback_case_time_to_contact_seconds_count") == 1
        status, cases = worker.get("/cases?status=open&overdue=true")
        assert status == 200 and [c["alert_id"] for c in cases["cases"]] == [vip_alert]
        assert worker.get("/cases?status=closed")[0] == 400
        dead = asyncio.run(consume_all(kafka_broker, env["FEEDBACK_TOPIC_DEADLETTER"],
                                       lambda r: len(r) >= 1))  # fmt: skip
        assert [dict(r.headers)["dlq.reason"] for r in dead] == [b"unknown_alert"]
    finally:
        worker.stop()

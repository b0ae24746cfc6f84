"""High-value by Pareto share over all customers: exact alerts, whatever the arrival order."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from app.domain.alerts import alert_id

from .harness import Worker, consume_all, create_topics, event, poll, produce, worker_env

pytestmark = pytest.mark.integration


def test_top_fifth_by_revenue_alerts_and_the_rest_do_not(kafka_broker: str, tmp_path: Path) -> None:
    unique = uuid.uuid4().hex[:10]
    env = worker_env(kafka_broker, unique, tmp_path / "data", FEEDBACK_HIGH_VALUE_TOP_SHARE="0.2",
                     FEEDBACK_HIGH_VALUE_REVENUE="1000000")  # fmt: skip
    s, p = env["FEEDBACK_TOPIC_SURVEYS"], env["FEEDBACK_TOPIC_PURCHASES"]
    records = []
    for i in range(10):  # revenue 100, 200, ... 1000: the top fifth is p8 and p9
        cust = f"p{i}"
        records.append((p, cust.encode(), event("purchase", f"{cust}-buy", cust,
                        "2026-01-01T00:00:00Z", order_id="o", amount=str((i + 1) * 100),
                        currency="EUR")))  # fmt: skip
    surveys = [("p9", 9, "2026-01-02"), ("p9", 2, "2026-01-03"), ("p8", 3, "2026-01-03"),
               ("p4", 9, "2026-01-02"), ("p4", 1, "2026-01-03")]  # fmt: skip
    for n, (cust, score, day) in enumerate(surveys):
        records.append((s, cust.encode(), event("survey", f"{cust}-s{n}", cust,
                        f"{day}T00:00:00Z", score=score)))  # fmt: skip
    create_topics(env)
    asyncio.run(produce(kafka_broker, records))  # all before the worker starts: any order

    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        poll(lambda: worker.metric("feedback_events_total") >= 15, 60, "15 events", worker)
        alerts = asyncio.run(consume_all(kafka_broker, env["FEEDBACK_TOPIC_ALERTS"],
                                         lambda r: len(r) >= 3, timeout=8))  # fmt: skip
        got = {json.loads(r.value)["alert_id"]: json.loads(r.value) for r in alerts}
        assert set(got) == {
            alert_id("detractor", "p9", "p9-s1"),
            alert_id("detractor", "p8", "p8-s2"),
        }
        assert {a["value_tier"] for a in got.values()} == {"A"}
        assert {a["trailing_revenue"] for a in got.values()} == {"1000", "900"}
    finally:
        worker.stop()

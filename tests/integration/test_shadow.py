"""A shadow run of a changed threshold names exactly the alerts it would add, and touches nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .harness import Worker, consume_all, event, poll, produce, worker_env

pytestmark = pytest.mark.integration


def feedback(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_shadow_threshold_change_diff_names_the_changed_alerts(
    kafka_broker: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_broker, uuid.uuid4().hex[:10], tmp_path / "data",
                     FEEDBACK_HIGH_VALUE_REVENUE="5000")  # fmt: skip
    s, p = env["FEEDBACK_TOPIC_SURVEYS"], env["FEEDBACK_TOPIC_PURCHASES"]
    records = []
    for cust, amount in (("rich", "6000"), ("mid", "3000"), ("poor", "500")):
        records += [
            (p, cust.encode(), event("purchase", f"{cust}-p", cust, "2026-02-01T00:00:00Z",
                                     order_id=f"o-{cust}", amount=amount, currency="EUR")),
            (s, cust.encode(), event("survey", f"{cust}-s1", cust, "2026-02-02T00:00:00Z",
                                     score=9)),
            (s, cust.encode(), event("survey", f"{cust}-s2", cust, "2026-02-03T00:00:00Z",
                                     score=2)),
        ]  # fmt: skip
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        asyncio.run(produce(kafka_broker, records))
        poll(lambda: worker.metric("feedback_events_total") >= 9, 60, "9 events", worker)
    finally:
        worker.stop()
    alerts_topic = env["FEEDBACK_TOPIC_ALERTS"]
    changelog = f"{env['FEEDBACK_APP_ID']}-customer_state_by_customer-changelog"
    before = asyncio.run(consume_all(kafka_broker, alerts_topic, lambda r: len(r) >= 1))
    log_before = asyncio.run(consume_all(kafka_broker, changelog, lambda r: False, timeout=5))
    assert [json.loads(r.value)["customer_id"] for r in before] == ["rich"]

    shadow = feedback(env, "shadow", "--set", "FEEDBACK_HIGH_VALUE_REVENUE=2000", "--name", "t",
                      "--timeout", "180", "--since", "2026-01-01T00:00:00+00:00")  # fmt: skip
    assert shadow.returncode == 0, shadow.stderr
    bad = feedback(env, "shadow", "--set", f"FEEDBACK_TOPIC_ALERTS={alerts_topic}")
    assert bad.returncode == 2 and "FEEDBACK_TOPIC_ALERTS" in bad.stderr

    done = feedback(env, "alerts", "diff", "--shadow", "t", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["shadow"] == f"{alerts_topic}.shadow-t"
    detractor = report["rules"]["detractor"]
    assert (detractor["production"], detractor["shadow"]) == (1, 2)
    assert detractor["added_alerts"] == [{"customer_id": "mid", "trigger_event_id": "mid-s2",
                                          "trailing_revenue": "3000"}]  # fmt: skip
    assert detractor["removed_alerts"] == [] and detractor["added_revenue"] == "3000"
    text = feedback(env, "alerts", "diff", "--shadow", "t")
    assert "+ mid  mid-s2  3000" in text.stdout and "since 2026-01-01" in text.stdout
    later = json.loads(feedback(env, "alerts", "diff", "--shadow", "t", "--json", "--since",
                                "2026-03-01T00:00:00+00:00").stdout)  # fmt: skip
    assert later["rules"] == {}, "no alert occurred since March"

    # Production untouched: the same alerts and the same changelog records as before.
    after = asyncio.run(consume_all(kafka_broker, alerts_topic, lambda r: False, timeout=5))
    log_after = asyncio.run(consume_all(kafka_broker, changelog, lambda r: False, timeout=5))
    assert [r.value for r in after] == [r.value for r in before]
    assert len(log_after) == len(log_before)

"""GDPR erasure on the real broker: the customer is gone, and a restore does not bring it back."""

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


def test_erase_then_sigkill_and_restore_on_an_empty_state_dir(
    kafka_broker: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_broker, uuid.uuid4().hex[:10], tmp_path / "data-1",
                     FEEDBACK_HIGH_VALUE_REVENUE="1000")  # fmt: skip
    s, p = env["FEEDBACK_TOPIC_SURVEYS"], env["FEEDBACK_TOPIC_PURCHASES"]
    records = [
        (p, b"gdpr", event("purchase", "g-p1", "gdpr", "2026-01-01T00:00:00Z", order_id="o1",
                           amount="6000", currency="EUR")),
        (s, b"gdpr", event("survey", "g-s1", "gdpr", "2026-01-02T00:00:00Z", score=9)),
        (s, b"gdpr", event("survey", "g-s2", "gdpr", "2026-01-03T00:00:00Z", score=2,
                           comment="call me at +44 20 7946 0000")),
        (p, b"keep", event("purchase", "k-p1", "keep", "2026-01-01T00:00:00Z", order_id="o2",
                           amount="50", currency="EUR")),
        (s, b"keep", event("survey", "k-s1", "keep", "2026-01-04T00:00:00Z", score=8)),
    ]  # fmt: skip
    worker = Worker(env, tmp_path / "worker-1.log")
    worker.start()
    try:
        asyncio.run(produce(kafka_broker, records))
        poll(lambda: worker.metric("feedback_events_total") >= 5, 60, "5 events", worker)
        assert worker.get("/customers/gdpr")[0] == 200
        done = subprocess.run([sys.executable, "-m", "app", "erase", "gdpr", "--reason", "art. 17"],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        poll(lambda: worker.get("/customers/gdpr")[0] == 404, 60, "gdpr forgotten", worker)
        assert worker.metric("feedback_erasures_total") == 1
        assert worker.get("/customers/keep")[0] == 200
        at_risk = worker.get("/at-risk?limit=50")[1]["customers"]
        assert "gdpr" not in {c["customer_id"] for c in at_risk}
        worker.kill()
    finally:
        worker.stop()

    # A fresh state directory: everything comes back from the changelog, except gdpr.
    env2 = {**env, "FEEDBACK_DATA_DIR": str(tmp_path / "data-2")}
    restarted = Worker(env2, tmp_path / "worker-2.log")
    restarted.start(timeout=180)
    try:
        poll(lambda: restarted.get("/customers/keep")[0] == 200, 120, "keep restored", restarted)
        assert restarted.get("/customers/gdpr")[0] == 404
    finally:
        restarted.stop()

    changelog = f"{env['FEEDBACK_APP_ID']}-customer_state_by_customer-changelog"
    logged = asyncio.run(consume_all(kafka_broker, changelog,
                                     lambda r: any(x.key == b"gdpr" and x.value is None
                                                   for x in r), timeout=30))  # fmt: skip
    mine = [r for r in logged if r.key == b"gdpr"]
    assert mine and mine[-1].value is None, "the last changelog record of gdpr is a tombstone"
    tomb = max(i for i, r in enumerate(mine) if r.value is None)
    assert all(r.value is None for r in mine[tomb:]), "no record after the tombstone holds it"
    alerts = asyncio.run(consume_all(kafka_broker, env["FEEDBACK_TOPIC_ALERTS"],
                                     lambda r: any(x.key == b"gdpr" and x.value is None
                                                   for x in r), timeout=30))  # fmt: skip
    gdpr_alerts = [r for r in alerts if r.key == b"gdpr"]
    assert json.loads(gdpr_alerts[0].value)["rule"] == "detractor"
    assert gdpr_alerts[-1].value is None, "the alert topic has a tombstone for the key"
    logs = (tmp_path / "worker-1.log").read_text(errors="replace")
    assert "7946" not in logs and "art. 17" not in logs, "comments and reasons are never logged"

"""Two workers share the partitions: HTTP lookups route to the owner, segment NPS counts once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from .harness import Worker, create_topics, event, poll, produce, worker_env

pytestmark = pytest.mark.integration


def test_two_workers_route_lookups_and_count_each_response_once(
    kafka_broker: str, tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:10]
    env_a = worker_env(kafka_broker, unique, tmp_path / "a")
    env_b = {**env_a, "FEEDBACK_DATA_DIR": str(tmp_path / "b"),
             "FEEDBACK_WEB_PORT": worker_env(kafka_broker, unique, tmp_path / "b")["FEEDBACK_WEB_PORT"]}  # fmt: skip
    create_topics(env_a)
    a, b = Worker(env_a, tmp_path / "a.log"), Worker(env_b, tmp_path / "b.log")
    a.start()
    b.start()
    try:

        def split() -> bool:
            na = a.get("/health")[1].get("assigned_partitions", 0)
            nb = b.get("/health")[1].get("assigned_partitions", 0)
            return bool(na and nb)

        poll(split, 90, "both workers to own partitions", b)
        s = env_a["FEEDBACK_TOPIC_SURVEYS"]
        customers = [f"w{i}" for i in range(40)]
        records = [(s, c.encode(), event("survey", f"{c}-s", c, "2026-06-01T00:00:00Z",
                                         score=10 if i % 2 else 0)) for i, c in enumerate(customers)]  # fmt: skip
        asyncio.run(produce(kafka_broker, records))

        def processed() -> bool:
            return a.metric("feedback_events_total") + b.metric("feedback_events_total") >= 40

        poll(processed, 60, "40 events over two workers", a)
        assert a.metric("feedback_events_total") > 0 and b.metric("feedback_events_total") > 0
        for c in customers:  # every customer from either worker: routed to the owner
            for w in (a, b):
                status, body = w.get(f"/customers/{c}")
                assert status == 200 and body["customer_id"] == c, (c, status, body)

        def counted_once() -> bool:
            for w in (a, b):
                rows = w.get("/nps?window=7d&segment=overall")[1].get("segments", [])
                if not rows or rows[0]["n"] != 40:
                    return False
            return True

        try:
            poll(counted_once, 60, "both workers to report n=40 for overall NPS", a)
        except AssertionError:
            print(
                "A",
                a.get("/nps?window=7d&segment=overall")[1],
                "B",
                b.get("/nps?window=7d&segment=overall")[1],
            )
            raise
        row = a.get("/nps?window=7d&segment=overall")[1]["segments"][0]
        assert (row["promoters"], row["detractors"], row["nps"]) == (20, 20, 0.0)
    finally:
        b.stop()
        a.stop()

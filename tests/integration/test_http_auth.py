"""FEEDBACK_HTTP_TOKEN: customer data needs the bearer token; probes and metrics stay open."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from .harness import Worker, event, poll, produce, worker_env

pytestmark = pytest.mark.integration
TOKEN = "a-long-random-token-" + uuid.uuid4().hex


def test_data_views_need_the_token_health_and_metrics_do_not(
    kafka_broker: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_broker, uuid.uuid4().hex[:10], tmp_path / "data",
                     FEEDBACK_HTTP_TOKEN=TOKEN)  # fmt: skip
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        raw = event("survey", "t-s1", "tok", "2026-01-01T00:00:00Z", score=9)
        asyncio.run(produce(kafka_broker, [(env["FEEDBACK_TOPIC_SURVEYS"], b"tok", raw)]))
        good = {"Authorization": f"Bearer {TOKEN}"}
        poll(lambda: worker.get("/customers/tok", good)[0] == 200, 60, "the customer", worker)
        for path in ("/customers/tok", "/at-risk", "/nps", "/churn?period=month"):
            assert worker.get(path)[0] == 401, path
            assert worker.get(path, {"Authorization": "Bearer wrong"})[0] == 401, path
            assert worker.get(path, good)[0] == 200, path
        status, body = worker.get("/customers/tok")
        assert body == {"error": "missing or wrong bearer token"}
        assert worker.get("/health")[0] == 200 and worker.get("/metrics")[0] == 200
        assert TOKEN not in worker.log.read_text(errors="replace"), "the token is never logged"
    finally:
        worker.stop()

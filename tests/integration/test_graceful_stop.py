"""SIGTERM: the worker finishes its batch, commits what it acked and exits; a restart on the
same state dir reads nothing twice (the batch path acks records as Faust's agent did)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from .harness import Worker, event, poll, produce, worker_env

pytestmark = pytest.mark.integration

EVENTS = 300


def surveys(topic: str, start: int, n: int) -> list[tuple[str, bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        cust = f"cust-{i % 40:03d}"
        raw = event("survey", f"e{i}", cust, f"2025-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
                    score=i % 11)  # fmt: skip
        out.append((topic, cust.encode(), raw))
    return out


def counted(worker: Worker) -> float:
    return worker.metric("feedback_events_total")


def test_sigterm_commits_and_a_restart_reads_nothing_twice(
    kafka_broker: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_broker, uuid.uuid4().hex[:10], tmp_path / "data",
                     FEEDBACK_BATCH_SIZE="64")  # fmt: skip
    topic = env["FEEDBACK_TOPIC_SURVEYS"]
    first = Worker(env, tmp_path / "worker-1.log")
    first.start()
    asyncio.run(produce(kafka_broker, surveys(topic, 0, EVENTS)))
    poll(lambda: counted(first) >= EVENTS, 90, f"{EVENTS} events processed", first)
    assert first.metric("feedback_events_total", outcome="duplicate") == 0

    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    try:
        code = first.proc.wait(60)
    except subprocess.TimeoutExpired:
        first.kill()
        raise AssertionError(f"worker did not exit on SIGTERM:\n{first.tail()}") from None
    assert code is not None

    second = Worker(env, tmp_path / "worker-2.log")
    second.start()
    try:
        asyncio.run(produce(kafka_broker, surveys(topic, EVENTS, 20)))
        poll(lambda: counted(second) >= 20, 90, "the new events processed", second)
        # Only the new events: everything before was committed on the way out.
        assert counted(second) == 20
        assert second.metric("feedback_events_total", outcome="duplicate") == 0
    finally:
        second.stop()

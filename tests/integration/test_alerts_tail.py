"""`feedback alerts tail`: prints alerts, and with a group commits only what it printed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.domain.events import encode

from .harness import produce
from .test_readme_consumer import make_alert

pytestmark = pytest.mark.integration


def tail(bootstrap: str, topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")},
           "FEEDBACK_BROKER": f"kafka://{bootstrap}", "FEEDBACK_TOPIC_ALERTS": topic}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "app", "alerts", "tail", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


async def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0)) or 0
    finally:
        await consumer.stop()


def test_tail_json_and_group_commits_only_what_it_printed(kafka_broker: str, unique: str) -> None:
    topic = f"alerts-{unique}"
    alerts = [make_alert(f"c{i}", f"e{i}") for i in range(5)]
    # one partition, so "what it printed" is an exact offset
    asyncio.run(produce(kafka_broker, [(topic, None, encode(a)) for a in alerts]))

    group = f"crm-{unique}"
    first = tail(kafka_broker, topic, "--json", "--group", group, "--limit", "2")
    assert first.returncode == 0, first.stderr
    printed = [json.loads(line) for line in first.stdout.splitlines()]
    assert [a["alert_id"] for a in printed] == [a.alert_id for a in alerts[:2]]
    assert asyncio.run(committed(kafka_broker, group, topic)) == 2

    rest = tail(kafka_broker, topic, "--json", "--group", group, "--exit-idle", "3")
    assert [json.loads(x)["customer_id"] for x in rest.stdout.splitlines()] == ["c2", "c3", "c4"]
    assert asyncio.run(committed(kafka_broker, group, topic)) == 5

    table = tail(kafka_broker, topic, "--from-beginning", "--limit", "5")
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["emitted_at", "rule", "customer_id"] and len(lines) == 6
    assert lines[0].split()[-1] == "case" and lines[1].split()[-1] == "-", "no worker: no status"

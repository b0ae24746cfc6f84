"""The real broker, the wire format and the decoder agree end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.domain.events import SurveyResponse, decode_event
from app.errors import InvalidEventError

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


async def test_valid_and_malformed_records_round_trip(kafka_broker: str, unique: str) -> None:
    topic = f"roundtrip-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()

    valid = (EXAMPLES / "valid_survey.json").read_bytes()
    malformed = b'{"event_type": "survey", "score": 99'
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker)
    await producer.start()
    try:
        await producer.send_and_wait(topic, valid, key=b"cust-42")
        await producer.send_and_wait(topic, malformed, key=b"cust-42")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_broker, group_id=f"g-{unique}",
        auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    try:
        got = []
        while len(got) < 2:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "no records within 10 s"
            for records in batch.values():
                got.extend(records)
    finally:
        await consumer.stop()

    assert {r.key for r in got} == {b"cust-42"}
    assert len({r.partition for r in got}) == 1, "same key, same partition, in order"
    first, second = sorted(got, key=lambda r: r.offset)
    event = decode_event(first.value)
    assert isinstance(event, SurveyResponse) and event.score == 4
    with pytest.raises(InvalidEventError) as info:
        decode_event(second.value)
    assert info.value.reason == "not_json"

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


async def test_changelog_topics_are_created_compacted_in_small_segments(
    kafka_broker: str, unique: str
) -> None:
    """Kafka compacts closed segments only: the changelogs are created with segments of
    FEEDBACK_CHANGELOG_SEGMENT_MIB so the log cleaner can drop superseded states."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from app.settings import Settings
    from app.topics import changelog_topics, ensure_topics

    settings = Settings(broker=f"kafka://{kafka_broker}", app_id=f"seg-{unique}",
                        partitions=2, changelog_segment_mib=3,
                        topic_surveys=f"s-{unique}", topic_purchases=f"p-{unique}",
                        topic_complaints=f"c-{unique}", topic_alerts=f"a-{unique}",
                        topic_deadletter=f"d-{unique}", topic_erasure=f"e-{unique}",
                        topic_alert_actions=f"x-{unique}")  # fmt: skip
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    try:
        names = changelog_topics(settings)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in [*names, f"s-{unique}"]]
        )
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            found[name] = {e[0]: e[1] for e in entries}
    for name in names:
        assert found[name]["cleanup.policy"] == "compact"
        assert found[name]["segment.bytes"] == str(3 * 1024**2)
    assert found[f"s-{unique}"]["segment.bytes"] != str(3 * 1024**2)  # input topics untouched


async def test_bulk_restore_reads_each_span_in_order_and_stops_at_its_end(
    kafka_broker: str, unique: str
) -> None:
    """app/streams/restore.read against the broker: offsets in order, nothing past a span's
    end, tombstones kept; a deadline already passed reads nothing."""
    import time

    from faust.types import TP

    from app.streams.restore import Change, Span, read

    topic = f"restore-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    await producer.start()
    try:
        for n in range(30):
            value = None if n % 7 == 6 else b"v%d" % n
            await producer.send_and_wait(topic, value, key=b"k%d" % (n % 5), partition=n % 2)
    finally:
        await producer.stop()
    # 15 records per partition (offsets 0..14): all of partition 0, offsets 4..9 of 1.
    spans = {TP(topic, 0): Span(0, 15), TP(topic, 1): Span(4, 10)}
    got: dict[TP, list[Change]] = {tp: [] for tp in spans}

    def apply(tp: TP, batch: list[Change]) -> None:
        got[tp].extend(batch)

    last = await read({"bootstrap_servers": kafka_broker}, spans, apply,
                      time.monotonic() + 60, 1024**2)  # fmt: skip
    assert [c.message.offset for c in got[TP(topic, 0)]] == list(range(15))
    assert [c.message.offset for c in got[TP(topic, 1)]] == list(range(4, 10))
    assert last == {TP(topic, 0): 14, TP(topic, 1): 9}
    sent = {(n % 2, n // 2): n for n in range(30)}  # (partition, offset) -> n
    for tp, changes in got.items():
        for c in changes:
            n = sent[(tp.partition, c.message.offset)]
            assert c.message.key == b"k%d" % (n % 5)
            assert c.message.value == (None if n % 7 == 6 else b"v%d" % n)
            assert c.message.tp == tp and c.message.partition == tp.partition

    late: list[Change] = []
    assert await read({"bootstrap_servers": kafka_broker}, spans,
                      lambda tp, batch: late.extend(batch), time.monotonic() - 1, 1024**2) == {}
    assert late == []

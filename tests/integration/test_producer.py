"""app/streams/producer.py against the real broker: record batches, their order and offsets."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.streams.producer import BatchingProducer

pytestmark = pytest.mark.integration


class FaustLike:
    """What BatchingProducer uses of Faust's producer: the aiokafka producer it owns."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    def _ensure_producer(self) -> AIOKafkaProducer:
        return self.producer


async def test_records_arrive_in_order_and_the_last_offset_is_base_plus_count(
    kafka_broker: str, unique: str,
) -> None:  # fmt: skip
    topic = f"changelog-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    # 1 KiB batches: 300-byte records split into several, and one record bigger than a batch.
    aio = AIOKafkaProducer(bootstrap_servers=kafka_broker, max_batch_size=1024)
    await aio.start()
    sent: dict[int, list[tuple[bytes, bytes | None]]] = {
        0: [(b"k%d" % i, b"v" * 300) for i in range(10)] + [(b"k3", None), (b"big", b"x" * 2000)],
        1: [(b"only", b"one")],
    }
    try:
        producer = BatchingProducer(FaustLike(aio))
        await aio.send_and_wait(topic, b"before", key=b"k", partition=0)  # offset 0 taken
        results = {p: await producer.send_records(topic, p, recs) for p, recs in sent.items()}
        assert len(results[0]) > 3, "several batches"
        assert sum(n for _, n in results[0]) == len(sent[0])
        await asyncio.gather(*(f for batches in results.values() for f, _ in batches))
    finally:
        await aio.stop()
    last = {p: b[-1][0].result().offset + b[-1][1] - 1 for p, b in results.items()}
    assert last == {0: len(sent[0]), 1: 0}

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker, group_id=f"g-{unique}",
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    got: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {0: [], 1: []}
    deadline = time.monotonic() + 30
    try:
        while sum(map(len, got.values())) < 1 + len(sent[0]) + len(sent[1]):
            assert time.monotonic() < deadline, f"read only {got}"
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                got[tp.partition] += [(r.offset, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    assert [(k, v) for _, k, v in got[0][1:]] == sent[0]
    assert [(k, v) for _, k, v in got[1]] == sent[1]
    assert got[0][-1][0] == last[0] and got[1][-1][0] == last[1]
